"""Bare Autobahn-on-Twisted echo server: the baseline lapps is compared to.

Same protocol options as lapps/protocols/server.py (webStatus=False,
failByDrop=False, allowNullOrigin=True, 16 MiB payload limits), the same
reactor twistd uses by default (epoll on Linux), no Lua, no routing.

    python3 bench/peers/autobahn_echo.py --port 9000
"""

import argparse

from twisted.internet import epollreactor

epollreactor.install()

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol  # noqa: E402
from twisted.internet import reactor  # noqa: E402

LIMIT = 16 * 1024 * 1024


class Echo(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", help="PEM certificate: serve wss")
    parser.add_argument("--key", help="PEM private key of --cert")
    args = parser.parse_args()
    factory = WebSocketServerFactory(server="autobahn-echo")
    factory.protocol = Echo
    factory.noisy = False
    factory.setProtocolOptions(webStatus=False, failByDrop=False, allowNullOrigin=True,
                               autoFragmentSize=0, maxMessagePayloadSize=LIMIT,
                               maxFramePayloadSize=LIMIT)
    if args.cert:
        from pathlib import Path

        from twisted.internet.ssl import PrivateCertificate
        pem = Path(args.cert).read_bytes() + Path(args.key).read_bytes()
        options = PrivateCertificate.loadPEM(pem).options()
        reactor.listenSSL(args.port, factory, options, interface=args.host)
    else:
        reactor.listenTCP(args.port, factory, interface=args.host)
    reactor.run()


if __name__ == "__main__":
    main()
