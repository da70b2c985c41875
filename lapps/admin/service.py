"""The admin listener as a service: a ``twisted.web`` site on its own
address, behind its own network ACL (a denied peer is closed at accept,
before a byte is read, as on the WebSocket port), plus the log observer
that keeps the recent warnings and errors while it runs."""

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.logger import Logger, globalLogPublisher
from twisted.web.server import Site

from lapps.acl import Acl
from lapps.admin.recent import RecentEvents
from lapps.admin.resources import root
from lapps.services.acl import GuardedFactory, describe_peer

log = Logger(namespace="lapps.admin")


class AdminAcl:
    """The judge of :class:`lapps.services.acl.GuardedFactory` for the admin port."""

    def __init__(self, section):
        self.acl = Acl.from_config(section)

    def admits(self, address) -> bool:
        if self.acl.allows(address.host):
            return True
        log.info("{peer} denied by the admin ACL", lapps_event="admin.denied",
                 peer=describe_peer(address))
        return False


class AdminSite(Site):
    """A site that logs no line per request: a scraper every few seconds
    would drown the log."""

    noisy = False

    def log(self, request):
        pass


class AdminService(Service):
    """Serves the admin resources for ``status`` (a reader of
    :mod:`lapps.admin.status`) on ``settings`` (the ``admin`` config
    object). ``port`` is the listening port once started."""

    name = "admin"

    def __init__(self, settings, status, reactor):
        self.status = status
        self.recent = RecentEvents()
        self.acl = AdminAcl(settings["acl"])
        ip, port = settings["ip"], settings["port"]
        kind = endpoints.TCP6ServerEndpoint if ":" in ip else endpoints.TCP4ServerEndpoint
        self.endpoint = kind(reactor, port, interface=ip)
        self.site = AdminSite(root(status, self.recent), reactor=reactor)
        self.site.displayTracebacks = False
        self.port = None

    def _observe(self, event):
        self.recent(event)
        self.status.observe(event)

    def startService(self):
        super().startService()
        globalLogPublisher.addObserver(self._observe)
        failures = []
        self.endpoint.listen(GuardedFactory(self.acl, self.site)).addCallbacks(
            self._up, failures.append)
        if failures:  # a TCP endpoint fails at once (address in use, ...)
            globalLogPublisher.removeObserver(self._observe)
            failures[0].raiseException()

    def _up(self, port):
        self.port = port
        host = port.getHost()
        log.info("admin interface on http://{host}:{port}/ (status page, /healthz, /readyz, "
                 "/metrics)", lapps_event="admin.up", host=host.host, port=host.port)

    def stopService(self):
        super().stopService()
        globalLogPublisher.removeObserver(self._observe)
        if self.port is None:
            return None
        port, self.port = self.port, None
        log.info("admin interface stopped", lapps_event="admin.down")
        return port.stopListening()
