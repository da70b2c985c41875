"""The Redis bus (``bus.backend: "redis"``): bcast and mqr shared by every
process and host connected to the same Redis and prefix.

:mod:`lapps.redis_address` reads ``bus.url`` (a config value: it lives beside
the config); :mod:`lapps.bus.redis.link` keeps one connection open;
:mod:`lapps.bus.redis.bus` is the service that owns the links and says
whether the bus is available; bcast and mqr live in
:mod:`lapps.bus.redis.bcast` (with :mod:`lapps.bus.redis.history`) and
:mod:`lapps.bus.redis.mqr`.
"""
