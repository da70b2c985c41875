"""The fast path's transports: TCP writes that go out at once, the
listening port and endpoint that make them, and the clock TLS connections
flush on (see :mod:`lapps.fast.frames` for why and how they are used).
"""

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

log = Logger(namespace="lapps.connection")

#: The listen queue: nginx's default on Linux (Twisted's is 50), so that a
#: burst of connections (LAppS's demo opens 3,200 at once) is not dropped.
LISTEN_BACKLOG = 511


class EagerWrites:
    """Mixed into a Twisted TCP transport (before it in the bases): sends
    at once what is written while nothing is queued, instead of on the
    reactor's next turn; the rest is Twisted's (the queue, the writer
    registration, the producer's pause)."""

    def write(self, data):
        if (self.dataBuffer or self._tempDataBuffer or not self.connected or self.disconnecting
                or self._writeDisconnected or type(data) is not bytes
                or len(data) > self.SEND_LIMIT):
            return super().write(data)
        try:
            sent = self.socket.send(data)
        except OSError:  # the socket is full, or gone: Twisted's own write finds out which
            sent = 0
        if sent < len(data):
            super().write(data[sent:] if sent else data)
        return None


class EagerServer(EagerWrites, tcp.Server):
    """The listener's TCP transport, with :class:`EagerWrites`."""

    #: The log context :mod:`lapps.fast.dispatch` dispatches this transport's events under.
    log_context = None


class CoalescingClock:
    """The clock TLS connections are given (``TLSMemoryBIOFactory``'s
    ``clock``): Twisted's TLS gathers a connection's small writes and
    flushes them with a ``callLater(0)`` of its own, one timed call (heap
    entry, Python comparisons) per connection per turn. Here every
    zero-delay call of one turn runs from a single reactor call, in the
    order made, on the same next turn; other delays go to the reactor."""

    def __init__(self, reactor):
        self.reactor = reactor
        self._soon = []
        self._scheduled = None

    def callLater(self, delay, f, *args, **kwargs):
        if delay:
            return self.reactor.callLater(delay, f, *args, **kwargs)
        call = _Soon(f, args, kwargs)
        self._soon.append(call)
        if self._scheduled is None:
            self._scheduled = self.reactor.callLater(0, self._run)
        return call

    def _run(self):
        self._scheduled = None
        soon, self._soon = self._soon, []
        for call in soon:
            if call.pending:
                call.pending = False
                try:
                    call.f(*call.args, **call.kwargs)
                except Exception:  # as the reactor does: one failure stops no other call
                    log.failure("while flushing TLS writes")

    def seconds(self):
        return self.reactor.seconds()

    def getDelayedCalls(self):
        return self.reactor.getDelayedCalls()


class _Soon:
    """A zero-delay call of a :class:`CoalescingClock`: what TLS uses of
    ``IDelayedCall`` (``cancel``, ``active``)."""

    __slots__ = ("f", "args", "kwargs", "pending")

    def __init__(self, f, args, kwargs):
        self.f, self.args, self.kwargs, self.pending = f, args, kwargs, True

    def cancel(self):
        self.pending = False

    def active(self):
        return self.pending


class EagerPort(tcp.Port):
    transport = EagerServer


@implementer(IStreamServerEndpoint)
class EagerTCPServerEndpoint:
    """Listens like ``TCP4ServerEndpoint``/``TCP6ServerEndpoint`` (by the
    interface's address family), with :class:`EagerServer` transports; or
    with the ports of ``port_class`` (a ``tcp.Port``: a worker's, say)."""

    def __init__(self, reactor, port, interface="", backlog=None, port_class=EagerPort):
        backlog = LISTEN_BACKLOG if backlog is None else backlog
        self.reactor, self.port, self.interface, self.backlog = reactor, port, interface, backlog
        self.port_class = port_class

    def listen(self, factory):
        return defer.execute(self._listen, factory)

    def _listen(self, factory):
        port = self.port_class(self.port, factory, self.backlog, self.interface, self.reactor)
        port.startListening()
        return port
