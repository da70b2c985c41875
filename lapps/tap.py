"""``twistd lapps``: options validated up front, then the service, with
SIGHUP reloading the configuration (an embedded ``LAppSService`` touches
no signal: its host calls ``reload()`` when it wants)."""

import signal
import sys

from twisted.application.service import MultiService, Service
from twisted.python import usage

from lapps.app import LAppSService
from lapps.config import ConfigError


class Options(usage.Options):
    synopsis = "--config PATH"
    longdesc = ("Serve the Lua services described by a lapps config (LAppS's lapps.json "
                "with ws.json beside it, or one file with the server keys under \"server\"). "
                "SIGHUP reloads the config; SIGTERM stops within its shutdown_timeout.")
    optParameters = [["config", "c", "etc/lapps.json", "The lapps config file."]]

    def postOptions(self):
        """Load and check everything now, so a bad config stops ``twistd``
        with one line per problem and no traceback."""
        try:
            self.service = LAppSService(self["config"])
        except ConfigError as e:
            for line in e.lines:
                print(line, file=sys.stderr)
            raise SystemExit(1)


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


def makeService(options):
    top = MultiService()
    options.service.setServiceParent(top)
    ReloadOnHangup(options.service).setServiceParent(top)
    return top
