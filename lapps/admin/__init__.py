"""The admin listener (server key ``admin``): ``/metrics`` for Prometheus,
``/healthz`` and ``/readyz`` for probes and load balancers, and a read-only
HTML status page, over plain HTTP on an address of its own (the WebSocket
port stays WebSocket-only). Off unless ``admin.port`` is set.

It starts before the Lua services, so that ``/readyz`` answers "not ready"
while they start, and stops last."""

from twisted.application.service import MultiService, Service
from twisted.internet.defer import inlineCallbacks

from lapps import metrics
from lapps.admin.service import AdminService
from lapps.admin.status import ProcessStatus, SupervisorStatus

__all__ = ["AdminService", "ProcessStatus", "SupervisorStatus", "WithAdmin", "build",
           "for_supervisor"]


def build(server_config, status, reactor):
    """The admin service for a validated ``server`` config object and a
    status reader, or None when ``admin.port`` is 0 (off)."""
    settings = server_config["admin"]
    if settings["port"] == 0:
        return None
    return AdminService(settings, status, reactor)


class WithAdmin(MultiService):
    """``server`` and its admin listener, started before it and stopped
    after it (a MultiService would stop both at once)."""

    def __init__(self, admin_service, server):
        super().__init__()
        self.admin, self.server = admin_service, server
        admin_service.setServiceParent(self)
        server.setServiceParent(self)

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        try:
            yield self.server.stopService()
        finally:
            yield self.admin.stopService()


def for_supervisor(supervisor):
    """A supervisor of worker processes (:mod:`lapps.workers.supervisor`)
    with its admin listener (a :class:`WithAdmin`), or alone when it is off."""
    status = SupervisorStatus(supervisor, metrics.open_connections)
    admin_service = build(supervisor.config.server, status, supervisor.reactor)
    return supervisor if admin_service is None else WithAdmin(admin_service, supervisor)
