"""A server for tests/test_reactor_dispatch.py (not a test module): lapps's
EagerServer transports on a real reactor, optionally with lapps.fast.dispatch's
dispatch. Each read is answered with the ``system`` of the legacy log line
made while handling it; ``boom`` raises, and the error's log line goes to
stdout as JSON."""

import argparse
import json
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--reactor", default="epoll", choices=["epoll", "select"])
parser.add_argument("--dispatch", default="lapps", choices=["lapps", "twisted"])
args = parser.parse_args()
if args.reactor == "epoll":
    from twisted.internet import epollreactor as chosen
else:
    from twisted.internet import selectreactor as chosen
chosen.install()

from twisted.internet import protocol, reactor  # noqa: E402
from twisted.python import log  # noqa: E402

from lapps.fast import dispatch as lapps_reactor  # noqa: E402
from lapps.fast.transport import EagerTCPServerEndpoint  # noqa: E402

seen = []


def observe(event):
    if event.get("isError"):
        failure = event.get("failure")
        print(json.dumps({"isError": True, "system": event.get("system"),
                          "why": str(failure.value) if failure else None}), flush=True)
    elif event.get("message") == ("probe",):
        seen.append(event["system"])


log.addObserver(observe)


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        if data == b"boom":
            raise RuntimeError("boom")
        log.msg("probe")
        self.transport.write(seen[-1].encode())


def listening(port):
    print(json.dumps({"port": port.getHost().port, "installed": installed}), flush=True)


installed = lapps_reactor.install(reactor) if args.dispatch == "lapps" else False
factory = protocol.Factory.forProtocol(Echo)
EagerTCPServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory).addCallback(listening)
reactor.run()
sys.exit(0)
