"""The listening socket, as a service: bound at start; at stop it stops
accepting, closes every connection (1001) and waits for them to go."""

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

log = Logger(namespace="lapps.listener")


class ListenerService(Service):
    """Serves ``factory`` on ``endpoint``. ``listening`` fires with the port."""

    name = "listener"
    drain_timeout = 5.0

    def __init__(self, endpoint, factory, description, clock, tls=False):
        self.endpoint, self.factory = endpoint, factory
        self.description, self.clock, self.tls = description, clock, tls
        self.listening = None
        self.port = None

    def startService(self):
        super().startService()
        self.listening = self.endpoint.listen(self.factory)
        failures = []
        self.listening.addCallbacks(self._up, failures.append)
        if failures:  # TCP and TLS endpoints fail synchronously (port in use, ...)
            failures[0].raiseException()

    def _up(self, port):
        self.port = port
        host = port.getHost()
        log.info("listening on {description} ({host}:{port})", lapps_event="listener.up",
                 description=self.description, host=host.host, port=host.port, tls=self.tls)
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
