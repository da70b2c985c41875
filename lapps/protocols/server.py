"""The WebSocket server: routing by request target in ``onConnect``, binding
each connection to one instance of its service, and the connection's life
from the 101 to its single ``onDisconnect``."""

import itertools
import ssl
import time
from http import HTTPStatus

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny
from OpenSSL import SSL
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from lapps import metrics
from lapps.config import LIMITS
from lapps.origin import normalise as normalise_origin
from lapps.protocols.backpressure import OutboundCap
from lapps.fast.frames import FastPath
from lapps.protocols.handshake import HandshakeLimits
from lapps.protocols.timers import ExactTimer

log = Logger(namespace="lapps.connection")

#: Handler ids are unique for the life of the process and never reused.
_handler_ids = itertools.count(1)

_CLOSED = (False, b"connection is closing")


class LAppSServerProtocol(FastPath, OutboundCap, HandshakeLimits, WebSocketServerProtocol):
    """One client connection of a reactive service. Its keepalive is its
    service's: Autobahn's automatic ping every ``ping_interval`` seconds;
    no traffic at all for ``ping_timeout`` after a ping drops the
    connection (a TCP abort: a peer that does not answer pings is not
    expected to answer a closing handshake either), logged as
    ``keepalive.timeout``; its ``onDisconnect`` runs as for any other end."""

    handler = None
    instance = None
    target = None
    handshake_result = None  # how the opening handshake ended (lapps.metrics)
    tls_version = None       # "TLSv1.3", ..., or None on plain ws
    #: Autobahn sets TCP_NODELAY from this in ``connectionMade``, before it
    #: copies its options from the factory, so it must be here: else Nagle
    #: stays on, and over TLS a message of 16 KiB or more (two records) waits
    #: for the client's delayed ACK, ~40 ms a round trip.
    tcpNoDelay = True

    def connectionMade(self):
        self.factory.protocols.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.forget(self)
        metrics.connection_lost(self, reason)

    def onConnect(self, request):
        if len(self.factory.protocols) > self.factory.max_connections:
            raise ConnectionDeny(403, "the server is at its connection limit")
        service = self.factory.routes.get(request.path)
        if service is None:
            raise ConnectionDeny(404, f"no service at {request.path}")
        acl = self.factory.acl
        if acl is not None and not acl.admits_to(service.name, self.transport.getPeer(), self.peer):
            metrics.handshake_result(self, "acl_denied")
            raise ConnectionDeny(403, f"the network ACL of service {service.name} "
                                 "does not admit this address")
        allowed = service.config.allowed_origins
        if allowed and _origin(request.origin) not in allowed:
            raise ConnectionDeny(403, f"service {service.name} does not admit "
                                 + (f"origin {request.origin}" if request.origin
                                    else "requests without an Origin header"))
        instance = service.pick()
        if instance is None:
            raise ConnectionDeny(503, f"service {service.name} has no running instance")
        self.instance, self.target = instance, request.path
        self.deliver = instance.lapps_message if service.config.protocol == "LAppS" \
            else instance.raw_message
        self.maxMessagePayloadSize = self.maxFramePayloadSize = \
            service.config.max_inbound_message_size
        self.autoPingInterval = service.config.ping_interval
        self.autoPingTimeout = service.config.ping_timeout
        if service.config.permessage_deflate:
            self.perMessageCompressionAccept = self.accept_deflate
        offered = service.config.proto_alias or service.config.protocol
        subprotocol = offered if offered in request.protocols else None
        return subprotocol, dict(service.config.extra_headers)

    def accept_deflate(self, offers):
        """Autobahn asks this after ``onConnect`` (services with
        ``permessage_deflate`` only): the client's first deflate offer, with
        the service's inbound limit applied to the inflated message, so that
        a small frame that inflates past it is closed 1009 while inflating."""
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(offer, max_message_size=self.maxMessagePayloadSize)
        return None

    def onOpen(self):
        self.handler = next(_handler_ids)
        self.opened_at = time.monotonic()
        metrics.handshake_result(self, "101")
        self.tls_version = _tls_version(self.transport)
        self.factory.connections[self.handler] = self
        config = self.instance.service.config
        self.cap_outbound(config.max_outbound_buffer, config.outbound_stall_timeout)
        if not self.factory.access_log:
            return
        log.info("{peer} connected to {target} as handler {handler}",
                 lapps_event="connection.open", peer=self.peer, target=self.target,
                 handler=self.handler, service=self.instance.service.name,
                 instance=self.instance.index)

    def onMessage(self, payload, isBinary):
        self.deliver(self, payload, isBinary)

    def onAutoPingTimeout(self):
        log.info("{peer} on {target} (handler {handler}) did not answer a ping in {timeout} s; "
                 "dropped", lapps_event="keepalive.timeout", peer=self.peer, target=self.target,
                 handler=self.handler, timeout=self.autoPingTimeout)
        super().onAutoPingTimeout()

    def onClose(self, wasClean, code, reason):
        handler = self.handler
        if handler is None or self.factory.connections.pop(handler, None) is None:
            return
        self.factory.broadcasts.drop(handler)
        self.instance.disconnect(handler)
        service = self.instance.service.name
        metrics.connection_closed(self, service)
        if not self.factory.access_log:
            return
        stats = self.trafficStats
        log.info("{peer} on {target} (handler {handler}) closed: code {code}, "
                 "{duration:.3f} s, {bytes_in} bytes in, {bytes_out} bytes out",
                 lapps_event="connection.close", peer=self.peer, target=self.target,
                 service=service, subprotocol=self.websocket_protocol_in_use,
                 tls=self.tls_version,
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

    def sendPreparedMessage(self, preparedMsg):
        """Autobahn's, counting the message as sent (bcast's deliveries:
        Autobahn writes an uncompressed prepared frame without counting it)."""
        if self._perMessageCompress is None or preparedMsg.doNotCompress:
            self.trafficStats.outgoingWebSocketMessages += 1
        super().sendPreparedMessage(preparedMsg)

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
        version = getattr(self, "http_headers", {}).get("sec-websocket-version")
        if code == 426 and path not in self.factory.routes:  # not even a WebSocket place
            code, reason = 404, f"no service at {path}"
        elif code == 400 and version is not None and version.strip() != "13":
            # RFC 6455 4.4: name the version spoken (Autobahn answers 400)
            code, reason = 426, f"WebSocket version {version.strip()!r} is not supported"
            responseHeaders = [("Sec-WebSocket-Version", "13")]
        metrics.handshake_result(self, str(code))
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


def _tls_version(transport):
    """The TLS version of a connection ("TLSv1.3"), or None without TLS
    (the handle of Twisted's TLS is its OpenSSL connection, of StdTLS its SSLObject)."""
    handle = transport.getHandle()
    if isinstance(handle, ssl.SSLObject):
        return handle.version()
    return handle.get_protocol_version_name() if isinstance(handle, SSL.Connection) else None


def _origin(header):
    """The origin an Origin header names, normalised (None if it names
    none, or is absent). A page loaded from a file has the opaque origin
    "null": Firefox sends that, Chrome has sent the file:// URL."""
    if header.lower().startswith("file:"):
        return "null"
    try:
        return normalise_origin(header)
    except ValueError:
        return None


class LAppSServerFactory(WebSocketServerFactory):
    """Routes request targets to reactive services; ``connections`` maps
    each open handler id to its protocol, shared with the ``ws`` module;
    ``acl`` (the ``acl`` service, optional) decides per service who may
    connect, before the upgrade; ``limits`` (the server's ``limits`` config
    object, set by :meth:`apply_limits`) bound each opening handshake."""

    protocol = LAppSServerProtocol
    noisy = False
    #: Whether new connections take :mod:`lapps.fast.frames` (server key ``fast_path``).
    fast_path = True
    #: Whether connections are logged as they open and close (server key ``access_log``).
    access_log = True

    def __init__(self, routes, connections, broadcasts, auto_fragment=False,
                 max_connections=10000, acl=None):
        super().__init__(server="lapps")
        self.routes, self.broadcasts, self.acl = routes, broadcasts, acl
        self.max_connections = max_connections
        self.connections = connections
        self.protocols = set()
        metrics.watch_server(self)
        self._closing = []  # (protocols not gone yet, Deferred) per close() under way
        self._batched_timer = ExactTimer(self.reactor)  # Autobahn's timers, on time
        self.setProtocolOptions(webStatus=False, failByDrop=False, allowNullOrigin=True,
                                versions=[13],
                                autoFragmentSize=1392 if auto_fragment else 0)
        self.apply_limits(LIMITS.fill())

    def setProtocolOptions(self, allowNullOrigin=True, **options):
        """Autobahn's, but ``allowNullOrigin`` stays on unless said otherwise
        (Autobahn's default argument turns it off at every call): origins are
        judged per service, in ``onConnect`` (``allowed_origins``)."""
        super().setProtocolOptions(allowNullOrigin=allowNullOrigin, **options)

    def apply_limits(self, limits):
        """The handshakes from now on follow ``limits`` (sizes read by
        :class:`lapps.protocols.handshake.HandshakeLimits`; the time is
        Autobahn's ``openHandshakeTimeout``)."""
        self.limits = limits
        self.setProtocolOptions(openHandshakeTimeout=limits["handshake_timeout"])

    def forget(self, protocol):
        self.protocols.discard(protocol)
        for closing in list(self._closing):
            left, done = closing
            left.discard(protocol)
            if not left:
                self._closing.remove(closing)
                done.callback(None)

    def close(self, protocols, code, reason, timeout, clock):
        """Close ``protocols``: open ones with ``code``, half-open ones at
        once; abort what is still there after ``timeout`` seconds. The
        Deferred fires when all are gone (an open one after its onDisconnect)."""
        left = self.protocols.intersection(protocols)
        if not left:
            return succeed(None)
        done = Deferred()
        self._closing.append((left, done))
        for protocol in list(left):
            if protocol.state == protocol.STATE_OPEN:
                protocol.close_with(code, reason)
            else:
                protocol.transport.abortConnection()
        straggler_cut = clock.callLater(timeout, _abort, left)
        done.addBoth(lambda result: straggler_cut.active() and straggler_cut.cancel())
        return done

    def close_all(self, timeout, clock):
        """Close every connection with 1001 (see :meth:`close`)."""
        return self.close(self.protocols, 1001, b"server shutting down", timeout, clock)


def _abort(protocols):
    for protocol in list(protocols):
        protocol.transport.abortConnection()
