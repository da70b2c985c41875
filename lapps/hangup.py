"""SIGHUP reloads the configuration: for the processes that own their
signals (``twistd lapps`` and each worker process), never for a program
that embeds lapps (it calls ``reload()`` when it wants)."""

import signal

from twisted.application.service import Service

from lapps.config import ConfigError


class ReloadOnHangup(Service):
    """SIGHUP → ``lapps.reload()``, from start to the end of the process
    (a SIGHUP during the stop is refused by ``reload`` and logged, rather
    than killing the process as the default disposition would)."""

    def __init__(self, lapps):
        self.lapps = lapps

    def startService(self):
        super().startService()
        signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum, frame):
        # a signal handler may interrupt the reactor anywhere: reload on its next turn
        self.lapps.reactor.callFromThread(self._reload)

    def _reload(self):
        self.lapps.reload().addErrback(_already_logged)


def _already_logged(failure):
    """A reload that failed on its config has logged each line of it."""
    failure.trap(ConfigError)
