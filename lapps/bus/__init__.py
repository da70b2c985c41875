"""The bus: where bcast channels and mqr queues live (server key ``bus``).

The Lua modules (:mod:`lapps.lua.bcast`, :mod:`lapps.lua.mqr`) see two
objects with one interface whatever the backend:

* the *broadcasts* (:class:`lapps.bus.local.bcast.Broadcasts` and its
  subclasses): ``create``, ``subscribe``, ``unsubscribe``, ``exists`` and
  ``publish`` (True, or ``(False, why)``), plus ``drop`` for a closed
  connection;
* the *queues* (:class:`lapps.bus.local.mqr.MessageQueues` and its
  likes): ``queue(name)``, whose ``post``, ``take``, ``take_or_wait``,
  ``forget`` and ``pass_on`` answer at once or, with the ``done`` callable
  they are given, later (:data:`lapps.bus.entries.PENDING`).

Three backends, one folder each:

* ``local`` (:mod:`lapps.bus.local`): in this process; the default of one
  process.
* ``host`` (:mod:`lapps.bus.host`): the supervisor carries them between its
  worker processes over Unix-domain sockets; the default with workers.
* ``redis`` (:mod:`lapps.bus.redis`): in Redis, shared by every process and
  host that names the same URL and prefix.

With ``host`` and ``redis`` a *connection* service links this process to
the bus; the Lua services start once it is ready.
"""

from dataclasses import dataclass
from typing import Any

from lapps.bus.unavailable import BusUnavailable

__all__ = ["Bus", "BusUnavailable", "build"]


@dataclass(frozen=True)
class Bus:
    broadcasts: Any
    queues: Any
    connection: Any = None  # the service linking this process to a shared bus


def build(settings, limits, connections, reactor, host_link=None) -> Bus:
    """The bus the server config's ``bus`` section describes (``backend``
    resolved), its queues bounded by ``limits`` (the ``mqr`` section).
    With Redis, Redis must answer now: :class:`BusUnavailable` if not.
    ``host_link`` is a worker's descriptor of its link to the supervisor; a
    process without one (no workers) has no host to share with, so
    ``host`` is the local bus there."""
    backend = settings["backend"]
    bounds = limits["max_queue"], limits["max_queue_bytes"]
    history = settings["history_max_bytes"]
    if backend == "host" and host_link is not None:
        from lapps.bus.host.bcast import HostBroadcasts
        from lapps.bus.host.link import HostLink
        from lapps.bus.host.mqr import HostQueues
        link = HostLink(host_link, reactor)
        return Bus(HostBroadcasts(connections, reactor, link, history),
                   HostQueues(link, *bounds), link)
    if backend == "redis":
        from lapps.bus.redis.bcast import RedisBroadcasts
        from lapps.bus.redis.bus import RedisBus
        from lapps.bus.redis.mqr import RedisQueues
        redis = RedisBus(settings, reactor)
        redis.probe()
        return Bus(RedisBroadcasts(connections, reactor, redis, history),
                   RedisQueues(redis, *bounds), redis)
    from lapps.bus.local.bcast import Broadcasts
    from lapps.bus.local.mqr import MessageQueues
    return Bus(Broadcasts(connections, reactor, history), MessageQueues(*bounds))
