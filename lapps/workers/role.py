"""What makes an ``LAppSService`` one worker among several (its
``worker`` argument): where it listens and which services it runs."""

from dataclasses import dataclass

from lapps.workers import reuseport


@dataclass(frozen=True)
class WorkerRole:
    """Worker ``index`` (from 0) of a server whose port is ``port``;
    ``bus_link`` is its descriptor of the host bus (None on another bus).

    Standalone services run in worker 0 only, unless their descriptor says
    ``"every_worker": true``: they are loops of the host (a producer, a
    poller), not per-connection work, and worker 0 rather than the parent
    keeps the supervisor free of Lua (a runaway or crashing service takes
    down a worker, which is restarted, never the supervisor)."""

    index: int
    port: int
    bus_link: int | None = None

    def endpoint(self, server, fast):
        """The listening endpoint, on the shared port (with the transports of
        ``fast``, the :class:`lapps.fast.Wing`)."""
        return fast.endpoint(self.port, server["ip"], reuseport.port_class(fast.enabled))

    def runs(self, service):
        """Whether this worker runs ``service`` (a ServiceConfig)."""
        return not service.standalone or service.every_worker or self.index == 0
