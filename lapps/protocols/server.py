"""The WebSocket server: routing by request target in ``onConnect``, binding
each connection to one instance of its service, and the connection's life
from the 101 to its single ``onDisconnect``."""

import itertools
import time
from http import HTTPStatus

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

log = Logger(namespace="lapps.connection")

#: Handler ids are unique for the life of the process and never reused.
_handler_ids = itertools.count(1)

_CLOSED = (False, b"connection is closing")


class LAppSServerProtocol(WebSocketServerProtocol):
    """One client connection of a reactive service."""

    handler = None
    instance = None
    target = None

    def connectionMade(self):
        self.factory.protocols.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.forget(self)

    def onConnect(self, request):
        if len(self.factory.protocols) > self.factory.max_connections:
            raise ConnectionDeny(403, "the server is at its connection limit")
        service = self.factory.routes.get(request.path)
        if service is None:
            raise ConnectionDeny(404, f"no service at {request.path}")
        acl = self.factory.acl
        if acl is not None and not acl.admits_to(service.name, self.transport.getPeer(), self.peer):
            raise ConnectionDeny(403, f"the network ACL of service {service.name} "
                                 "does not admit this address")
        instance = service.pick()
        if instance is None:
            raise ConnectionDeny(503, f"service {service.name} has no running instance")
        self.instance, self.target = instance, request.path
        self.deliver = instance.lapps_message if service.config.protocol == "LAppS" \
            else instance.raw_message
        self.maxMessagePayloadSize = self.maxFramePayloadSize = \
            service.config.max_inbound_message_size
        offered = service.config.proto_alias or service.config.protocol
        subprotocol = offered if offered in request.protocols else None
        return subprotocol, dict(service.config.extra_headers)

    def onOpen(self):
        self.handler = next(_handler_ids)
        self.opened_at = time.monotonic()
        self.factory.connections[self.handler] = self
        log.info("{peer} connected to {target} as handler {handler}",
                 lapps_event="connection.open", peer=self.peer, target=self.target,
                 handler=self.handler, service=self.instance.service.name,
                 instance=self.instance.index)

    def onMessage(self, payload, isBinary):
        self.deliver(self, payload, isBinary)

    def onClose(self, wasClean, code, reason):
        handler = self.handler
        if handler is None or self.factory.connections.pop(handler, None) is None:
            return
        self.factory.broadcasts.drop(handler)
        self.instance.disconnect(handler)
        stats = self.trafficStats
        log.info("{peer} on {target} (handler {handler}) closed: code {code}, "
                 "{duration:.3f} s, {bytes_in} bytes in, {bytes_out} bytes out",
                 lapps_event="connection.close", peer=self.peer, target=self.target,
                 handler=handler, code=code, sent_code=self.localCloseCode, clean=wasClean,
                 duration=time.monotonic() - self.opened_at,
                 bytes_in=stats.incomingOctetsWireLevel, bytes_out=stats.outgoingOctetsWireLevel)

    # What Lua's ws module calls.

    def send_raw(self, opcode, data):
        if (opcode != 1 and opcode != 2) or isinstance(opcode, bool):
            return False, b"opcode must be 1 (text) or 2 (binary)"
        if not isinstance(data, bytes):
            return False, b"data must be a string"
        if self.state != self.STATE_OPEN:
            return _CLOSED
        if opcode == 1 and not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return False, b"a text message must be valid UTF-8"
        self.sendMessage(data, opcode == 2)
        return True

    def close_with(self, code, reason=None):
        """Start the closing handshake with any RFC 6455 code (Autobahn's
        ``sendClose`` allows only 1000 and 3000-4999)."""
        if self.state != self.STATE_OPEN:
            return _CLOSED
        self.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)
        return True

    # Handshake failures: a plain-text HTTP answer, never an HTML page.

    def failHandshake(self, reason, code=400, responseHeaders=None):
        path = getattr(self, "http_request_path", None)
        if code == 426 and path not in self.factory.routes:  # not even a WebSocket place
            code, reason = 404, f"no service at {path}"
        log.info("handshake from {peer} refused with {code}: {reason}",
                 lapps_event="handshake.refused", peer=self.peer, code=code, reason=reason)
        super().failHandshake(reason, code, responseHeaders)

    def sendHttpErrorResponse(self, code, reason, responseHeaders=None):
        body = (reason + "\n").encode("utf-8")
        headers = [("Server", self.factory.server),
                   ("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body))),
                   ("Connection", "close")]
        if code == 426:
            headers.append(("Upgrade", "websocket"))
        headers.extend(responseHeaders or ())
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        head = f"HTTP/1.1 {code} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.sendData(head.encode("latin-1") + b"\r\n" + body)


class LAppSServerFactory(WebSocketServerFactory):
    """Routes request targets to reactive services; ``connections`` maps
    each open handler id to its protocol, shared with the ``ws`` module;
    ``acl`` (the ``acl`` service, optional) decides per service who may
    connect, before the upgrade."""

    protocol = LAppSServerProtocol
    noisy = False

    def __init__(self, routes, connections, broadcasts, auto_fragment=False,
                 max_connections=10000, acl=None):
        super().__init__(server="lapps")
        self.routes, self.broadcasts, self.acl = routes, broadcasts, acl
        self.max_connections = max_connections
        self.connections = connections
        self.protocols = set()
        self._drained = []
        self.setProtocolOptions(webStatus=False, failByDrop=False, allowNullOrigin=True,
                                versions=[13],
                                autoFragmentSize=1392 if auto_fragment else 0)

    def forget(self, protocol):
        self.protocols.discard(protocol)
        if not self.protocols:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def close_all(self, timeout, clock):
        """Close every connection: open ones with 1001, half-open ones at
        once; abort what is still there after ``timeout`` seconds. The
        Deferred fires when none is left."""
        if not self.protocols:
            return succeed(None)
        drained = Deferred()
        self._drained.append(drained)
        for protocol in list(self.protocols):
            if protocol.state == protocol.STATE_OPEN:
                protocol.close_with(1001, b"server shutting down")
            else:
                protocol.transport.abortConnection()
        straggler_cut = clock.callLater(timeout, self._abort_all)
        drained.addBoth(lambda result: straggler_cut.active() and straggler_cut.cancel())
        return drained

    def _abort_all(self):
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
