"""The bus: where bcast channels and mqr queues live (server key ``bus``).

The Lua modules see two objects with one interface whatever the backend:

* the *broadcasts* (:class:`lapps.services.bcast.Broadcasts`): ``create``,
  ``subscribe``, ``unsubscribe``, ``exists`` and ``publish`` (True, or
  ``(False, why)``), plus ``drop`` for a closed connection;
* the *queues* (:class:`lapps.services.mqr.MessageQueues`): ``queue(name)``,
  whose ``post``, ``take``, ``take_or_wait``, ``forget`` and ``pass_on``
  answer at once or, with the ``done`` callable they are given, later
  (:data:`lapps.services.mqr.PENDING`).

``local`` (the default) keeps both in this process. ``redis`` puts them in
Redis (:mod:`lapps.bus.redis_bus`, :mod:`lapps.bus.redis_bcast`,
:mod:`lapps.bus.redis_mqr`), shared by every process and host that names
the same URL and prefix.
"""

from dataclasses import dataclass
from typing import Any

from lapps.services.bcast import Broadcasts
from lapps.services.mqr import MessageQueues


class BusUnavailable(Exception):
    """Redis cannot be reached (the message names it and says why)."""


@dataclass(frozen=True)
class Bus:
    broadcasts: Any
    queues: Any
    redis: Any = None  # the RedisBus service, with the redis backend


def build(settings, max_queue, connections, reactor) -> Bus:
    """The bus the server config's ``bus`` section describes. With Redis,
    Redis must answer now: :class:`BusUnavailable` if not."""
    if settings["backend"] == "local":
        return Bus(Broadcasts(connections, reactor), MessageQueues(max_queue))
    # txredisapi is imported only when a server uses Redis
    from lapps.bus.redis_bcast import RedisBroadcasts
    from lapps.bus.redis_bus import RedisBus
    from lapps.bus.redis_mqr import RedisQueues
    redis = RedisBus(settings, reactor)
    redis.probe()
    return Bus(RedisBroadcasts(connections, reactor, redis), RedisQueues(redis, max_queue), redis)
