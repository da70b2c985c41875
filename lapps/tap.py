"""``twistd lapps``: options validated up front, then the service."""

import sys

from twisted.python import usage

from lapps.app import LAppSService
from lapps.config import ConfigError


class Options(usage.Options):
    synopsis = "--config PATH"
    longdesc = ("Serve the Lua services described by a lapps config (LAppS's lapps.json "
                "with ws.json beside it, or one file with the server keys under \"server\").")
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


def makeService(options):
    return options.service
