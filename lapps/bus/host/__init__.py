"""The host bus (``bus.backend: "host"``): bcast and mqr shared by the
worker processes of one supervisor, with nothing else to install.

The supervisor runs the hub (:mod:`lapps.bus.host.hub`), which holds the
channel ids and the queues of the host; each worker has one Unix-domain
socket to it (:mod:`lapps.bus.host.link`), made before the worker starts,
and speaks the messages of :mod:`lapps.bus.host.wire` on it. The worker's
bcast (:mod:`lapps.bus.host.bcast`) and mqr (:mod:`lapps.bus.host.mqr`)
keep the interface of the local bus, with the semantics of the Redis bus.
"""
