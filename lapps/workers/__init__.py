"""Worker processes (server key ``workers.workers`` > 1): a thin supervisor
parent (:mod:`lapps.workers.supervisor`, no Lua in it) and that many worker
processes (:mod:`lapps.workers.worker`), each a whole ``LAppSService``
listening on the same port with SO_REUSEPORT (:mod:`lapps.workers.reuseport`)
and sharing bcast and mqr through the Redis bus."""
