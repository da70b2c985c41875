"""What the admin listener reports, read from the running server: is it
ready (and if not, why), which services run with how many connections,
which worker processes. Two readers answer the same questions:
:class:`ProcessStatus` for one ``LAppSService`` (the single-process
server) and :class:`SupervisorStatus` for the parent of worker processes,
which sees its workers only through their state and their log events."""

import collections
import weakref
from dataclasses import dataclass

from lapps import redis_address as bus_address
from lapps.start_order import services_to_start  # the same choice the workers make


@dataclass(frozen=True)
class ServiceRow:
    name: str
    kind: str            # "reactive" or "standalone"
    target: str | None   # the request target of a reactive service
    instances: int       # per process
    connections: int     # open WebSocket connections, all processes together
    started: bool        # its instances have run onStart / init (in every process)


@dataclass(frozen=True)
class DeployedRow:
    name: str
    archive: str
    sha256: str       # of the archive file
    deployed_at: str


def deployed_rows(config):
    """The services deployed from archives (lapps.deploy), by name."""
    return [DeployedRow(name=name, archive=entry.get("archive"), sha256=entry.get("sha256"),
                        deployed_at=entry.get("deployed_at"))
            for name, entry in sorted(config.deployed.items())]


@dataclass(frozen=True)
class WorkerRow:
    index: int
    pid: int | None
    ready: bool
    restarts: int


def _service_row(config, connections, started):
    return ServiceRow(name=config.name, kind="standalone" if config.standalone else "reactive",
                      target=config.request_target, instances=config.instances,
                      connections=connections.get(config.name, 0), started=started)


class ProcessStatus:
    """The status of one ``LAppSService`` (``lapps.app``), read on demand."""

    def __init__(self, lapps):
        self.lapps = lapps
        self._seen = weakref.WeakSet()     # Lua services whose when_ready() is watched
        self._started = weakref.WeakSet()  # ... and those for which it has fired

    def observe(self, event):
        """Everything this reader needs is in the service itself."""

    def _has_started(self, service):
        if service not in self._seen:
            self._seen.add(service)
            service.when_ready().addCallback(lambda _: self._started.add(service))
        return service in self._started

    def problems(self):
        """Why the server is not ready to take clients, one line each; empty when it is."""
        lapps, lines = self.lapps, []
        if not lapps.running:
            lines.append("the server is not running (starting or stopping)")
        if lapps.listener.port is None:
            lines.append(f"listener {lapps.listener.description}: not bound")
        for service in lapps.lua_services:
            if not self._has_started(service):  # its dependencies: services, and the bus
                waiting = [d.name for d in service.dependencies if not self._has_started(d)]
                lines.append(f"service {service.name}: " + (
                    f"waiting for {', '.join(waiting)}" if waiting else "starting"))
            elif not service.config.standalone and not any(i.healthy for i in service.instances):
                lines.append(f"service {service.name}: no running instance "
                             "(onStart failed or timed out)")
        connection = lapps.bus.connection
        if connection is not None and not connection.available:
            lines.append(connection.problem().decode("utf-8", "replace"))
        return lines

    def services(self):
        counts = collections.Counter(c.instance.service.name
                                     for c in self.lapps.connections.values())
        return [_service_row(s.config, counts, self._has_started(s))
                for s in self.lapps.lua_services]

    def workers(self):
        return []

    def deployed(self):
        return deployed_rows(self.lapps.config)


class SupervisorStatus:
    """The status of a supervisor of worker processes (``lapps.workers``):
    ``supervisor.workers`` (each with ``index``, ``pid``, ``ready``,
    ``restarts``) and ``supervisor.config``. A worker's bus state comes from
    the ``bus.available`` / ``bus.unavailable`` events it logs, which the
    supervisor re-emits with ``lapps_worker`` (its index) and
    ``lapps_worker_pid``; a restarted worker (another pid) starts as unknown."""

    def __init__(self, supervisor, open_connections):
        self.supervisor = supervisor
        self.open_connections = open_connections  # () -> {service: n}, over all workers
        self._bus = {}  # worker index -> (pid, available)

    def observe(self, event):
        name = event.get("lapps_event")
        if name in ("bus.available", "bus.unavailable") and "lapps_worker" in event:
            self._bus[event["lapps_worker"]] = (event.get("lapps_worker_pid"),
                                                name == "bus.available")

    def _bus_available(self, worker):
        return self._bus.get(worker.index) == (worker.pid, True)

    def problems(self):
        config, lines = self.supervisor.config, []
        if not self.supervisor.running:
            lines.append("the server is not running (starting or stopping)")
        redis = config.server["bus"]["backend"] == "redis"
        for worker in self.supervisor.workers:
            which = f"worker {worker.index} " + (
                "(no process)" if worker.pid is None else f"(pid {worker.pid})")
            if not worker.ready:
                lines.append(f"{which}: not ready")
            elif redis and not self._bus_available(worker):
                lines.append(f"{which}: the bus is unavailable: Redis at "
                             f"{bus_address.parse(config.server['bus']['url'])}")  # no password
        return lines

    def services(self):
        config = self.supervisor.config
        counts = self.open_connections()
        started = all(w.ready for w in self.supervisor.workers)
        return [_service_row(config.services[name], counts, started)
                for name in services_to_start(config)]

    def deployed(self):
        return deployed_rows(self.supervisor.config)

    def workers(self):
        return [WorkerRow(index=w.index, pid=w.pid, ready=bool(w.ready), restarts=w.restarts)
                for w in self.supervisor.workers]
