"""The garbage collector of a process lapps owns (``twistd lapps``, a worker
process): once the server is ready, what start-up made (Twisted, Autobahn,
the Lua runtimes, the config: long-lived, and most of the objects there
are) is frozen, so the collector's older generations no longer walk it
again and again as connections come and go. Measured on 4,000 ws
handshakes (``bench/connections.py``'s load): about a fifth less server CPU
per handshake. An embedding application owns its own collector and may do
the same (``gc.freeze()``)."""

import gc

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger(namespace="lapps.collector")


class FreezeWhenReady(Service):
    """``gc.freeze()`` once ``when_ready()`` (the server's, a Deferred)
    fires; start it after the server (``when_ready`` is asked at start)."""

    name = "collector"

    def __init__(self, when_ready):
        self.when_ready = when_ready

    def startService(self):
        super().startService()
        self.when_ready().addCallback(self._freeze)

    def _freeze(self, _):
        if self.running:
            gc.freeze()
            log.info("garbage collector: {count} objects of start-up frozen",
                     lapps_event="collector.frozen", count=gc.get_freeze_count())
