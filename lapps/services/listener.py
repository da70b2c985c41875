"""The listening socket, as a service: bound at start; at stop it stops
accepting, closes every connection (1001) and waits for them to go.

What the port accepts goes, in order, through the global ACL (the ``acl``
service's guard: a denied peer is closed before a byte is read), then the
per-peer connection limits (closed the same way), then TLS when it is on,
then the WebSocket factory."""

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

log = Logger(namespace="lapps.listener")


class ListenerService(Service):
    """Serves ``factory`` on ``endpoint`` (a TCP endpoint). ``tls`` is the
    server's TLS (a :class:`lapps.tls.ServerTLS`, whose certificate a reload
    replaces for new connections), or None for plain ``ws``;
    ``acl`` the :class:`lapps.services.acl.AclService` that guards the port,
    if any; ``peer_limits`` the :class:`lapps.services.peer_limits.PeerLimits`
    behind it, if any. ``listening`` fires with the port."""

    name = "listener"
    drain_timeout = 5.0
    #: What TLS connections schedule their write flushes with (None: the reactor).
    tls_clock = None
    #: What makes the TLS connections (``fast_path``: :class:`lapps.fast.stdtls.StdTLSFactory`).
    tls_factory = TLSMemoryBIOFactory

    def __init__(self, endpoint, factory, description, clock, tls=None, acl=None,
                 peer_limits=None):
        self.endpoint, self.factory = endpoint, factory
        self.description, self.clock, self.tls, self.acl = description, clock, tls, acl
        self.peer_limits = peer_limits
        self.listening = None
        self.port = None

    def startService(self):
        super().startService()
        accepting = self.factory
        if self.tls is not None:
            accepting = self.tls_factory(self.tls, False, accepting, clock=self.tls_clock)
        if self.peer_limits is not None:
            accepting = self.peer_limits.guard(accepting)
        if self.acl is not None:
            accepting = self.acl.guard(accepting)
        self.listening = self.endpoint.listen(accepting)
        failures = []
        self.listening.addCallbacks(self._up, failures.append)
        if failures:  # TCP and TLS endpoints fail synchronously (port in use, ...)
            failures[0].raiseException()

    def _up(self, port):
        self.port = port
        host = port.getHost()
        log.info("listening on {description} ({host}:{port})", lapps_event="listener.up",
                 description=self.description, host=host.host, port=host.port,
                 tls=self.tls is not None)
        return port

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        yield self.factory.close_all(self.drain_timeout, self.clock)
        log.info("listener on {description} stopped", lapps_event="listener.down",
                 description=self.description)
