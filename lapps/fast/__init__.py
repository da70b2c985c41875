"""The fast path (server key ``fast_path``): everything lapps puts in
place of Twisted's and Autobahn's own per-message and per-connection
machinery, in one wing, behind one entry point.

* :mod:`lapps.fast.frames`: the common WebSocket frame in and out without
  Autobahn's chain of callbacks (mixed into the server protocol);
* :mod:`lapps.fast.transport`: TCP transports that write at once, their
  port and endpoint, the clock TLS flushes on;
* :mod:`lapps.fast.stdtls`: TLS on the standard library's ``ssl``;
* :mod:`lapps.fast.dispatch`: the epoll reactor's cheaper event dispatch;
* :mod:`lapps.fast.quiet_handshake`: no debug formatting of each handshake;
* :mod:`lapps.fast.client`: the same for ``cws``'s client connections;
* :mod:`lapps.fast.private_names`: the private names of Twisted and
  Autobahn all of these rely on, checked before any is used.

:func:`wing` is what the plugin, a worker and an embedding application
call (through :class:`lapps.app.LAppSService`) to get the listening
endpoint, the TLS factory and clock, and the reactor dispatch. When the
fast path is not wanted, or a name it relies on is missing (one log line,
``fast_path.unavailable``), they are Twisted's and Autobahn's own.
"""

from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import endpoints

from lapps.fast import dispatch, private_names, quiet_handshake
from lapps.fast.stdtls import StdTLSFactory
from lapps.fast.transport import LISTEN_BACKLOG, CoalescingClock, EagerPort, EagerTCPServerEndpoint

__all__ = ["Wing", "wing", "LISTEN_BACKLOG"]


@dataclass(frozen=True)
class Wing:
    """The parts a server is built with: the fast path's when ``enabled``,
    else the stock ones (``tls_factory`` and ``tls_clock`` None: Twisted's)."""

    enabled: bool
    reactor: Any
    tls_factory: Optional[type] = None
    tls_clock: Optional[CoalescingClock] = None

    def endpoint(self, port, interface, port_class=None):
        """Where the server listens: ``interface``:``port``, with the fast
        path's transports when enabled; ``port_class`` makes the ports
        (a worker's: :func:`lapps.workers.reuseport.port_class`)."""
        if port_class is not None:
            return EagerTCPServerEndpoint(self.reactor, port, interface, port_class=port_class)
        if self.enabled:
            return EagerTCPServerEndpoint(self.reactor, port, interface, port_class=EagerPort)
        stock = endpoints.TCP6ServerEndpoint if ":" in interface else endpoints.TCP4ServerEndpoint
        return stock(self.reactor, port, LISTEN_BACKLOG, interface=interface)

    def install_dispatch(self):
        """The reactor's cheaper event dispatch, when enabled (a process
        that owns its reactor asks: ``twistd lapps``, a worker); whether it
        is installed."""
        return self.enabled and dispatch.install(self.reactor)


def wing(reactor, wanted: bool) -> Wing:
    """The fast path's parts when ``wanted`` and every private name it
    relies on is in this Twisted and Autobahn; else the stock parts."""
    if not (wanted and private_names.fast_path_available()):
        return Wing(False, reactor)
    quiet_handshake.install()
    return Wing(True, reactor, StdTLSFactory, CoalescingClock(reactor))
