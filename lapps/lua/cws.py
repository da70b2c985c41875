"""``cws``: the WebSocket client of Lua services (spec §5).

The connections are Autobahn client protocols on the reactor; a service
reaches them only through ``callFromThread`` (to connect, send and close) and
a queue of events (open, message, error, close) that ``cws:eventLoop()``
drains, so callbacks run only inside ``eventLoop``, in the service's own
thread. As in LAppS, ``cws:new`` waits for the TCP connection only; the
TLS handshake and the upgrade go on while the service runs, and end in
``onopen`` or ``onerror``. A standalone instance connects to an IP literal
(or ``localhost``) in its own thread, a blocking ``connect`` as LAppS's, and
the reactor adopts the socket, so creating connections does not wait for
the reactor's turns; otherwise the reactor connects (names are looked up
there) while the instance blocks its thread, or a reactive one suspends
its coroutine. What is sent before ``onopen`` goes once the connection is
open.

``cws:send`` never buffers without bound: once :data:`MAX_SEND_BUFFER` bytes
wait to go out on a connection (the instance's sends not yet taken by the
reactor, those held until the handshake ends, and those written while the
connection's transport is full because the remote server does not read),
it returns false and "send buffer full" until they have gone. When nothing
waits, a message of any size goes.
"""

import collections
import itertools
import queue
import socket
import ssl
import struct
from urllib.parse import urlsplit

import service_identity
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from OpenSSL import SSL
from twisted.internet import endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.threadable import isInIOThread

from lapps.lua import source
from lapps.protocols.backpressure import OutboundCap
from lapps.fast.client import FastClient, adopt, connecting
from lapps.fast.stdtls import StdTLSFactory
from lapps.fast.transport import CoalescingClock

MAX_MESSAGE = 16 * 1024 * 1024
#: Bytes one connection may have waiting to go out (sent by Lua, not yet
#: taken by the remote server) before ``cws:send`` says "send buffer full".
MAX_SEND_BUFFER = 4 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
#: What a connection lost in its TLS handshake ends with: ``ssl``'s errors
#: (fast path), or pyOpenSSL's and then service-identity's of the name.
_TLS_ERRORS = (ssl.SSLError, SSL.Error, service_identity.VerificationError,
               service_identity.CertificateError)
_ids = itertools.count(1)

_CWS = source.read("cws.lua")


class _Protocol(FastClient, OutboundCap, WebSocketClientProtocol):
    """One cws connection: reports to its pool, never runs Lua itself. It
    counts what it writes while its transport is full (``outbound_backlog``)
    and holds what the service sends before the handshake ends. Its common
    frames take :mod:`lapps.fast.client`."""

    lost = None
    was_open = False

    def connectionMade(self):
        self.held, self.outbound_backlog = [], 0
        self.factory.pool.protocols[self.factory.handler] = self
        super().connectionMade()

    def connectionLost(self, reason):
        self.lost = reason.value  # why, when the handshake never finished (TLS, ...)
        super().connectionLost(reason)

    def onOpen(self):
        self.was_open = True
        self.cap_outbound()
        self.factory.pool.opened(self)

    def onMessage(self, payload, isBinary):
        self.factory.pool.events.put((b"message", self.factory.handler, payload,
                                      2 if isBinary else 1))

    def onClose(self, wasClean, code, reason):
        self.factory.pool.closed(self, wasClean, code, reason)

    def hold(self, data, is_binary):
        self.held.append((data, is_binary))
        self.outbound_backlog += len(data)

    def send_held(self):
        held, self.held, self.outbound_backlog = self.held, [], 0
        for data, is_binary in held:
            self.sendMessage(data, is_binary)


def _failure_text(failure):
    error = failure.value
    return f"Can't create socket: {type(error).__name__}: {error}".encode()


def _handshake_failure(protocol, reason):
    """The ``onerror`` message of a connection that closed before it opened:
    LAppS's words, then what went wrong."""
    lost = protocol.lost
    if lost is not None and not isinstance(lost, ConnectionDone):
        why = f"{type(lost).__name__}: {lost}"
        stage = "TLS handshake" if isinstance(lost, _TLS_ERRORS) else "HTTP Upgrade Request"
    else:
        why, stage = protocol.wasNotCleanReason or reason, "HTTP Upgrade Request"
    return f"Communication error on {stage} ({why})".encode()


def _literal(host):
    """The address of an IP literal or ``localhost`` (IPv4 loopback): no
    lookup needed; else None."""
    if host == "localhost":
        return "127.0.0.1"
    return host if isIPAddress(host) or isIPv6Address(host) else None


def _endpoint(reactor, host, port, eager):
    """An IP literal or ``localhost`` needs no lookup (and, ``eager``, gets
    transports that write at once)."""
    host = _literal(host) or host
    if isIPAddress(host):
        return endpoints.TCP4ClientEndpoint(connecting(reactor, eager), host, port,
                                            timeout=CONNECT_TIMEOUT)
    if isIPv6Address(host):
        return endpoints.TCP6ClientEndpoint(connecting(reactor, eager), host, port,
                                            timeout=CONNECT_TIMEOUT)
    return endpoints.HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)


class Pool:
    """The cws connections of one Lua instance and their event queue."""

    def __init__(self, reactor, client_tls, pending, may_block, fast_path=True):
        self.reactor, self.client_tls, self.may_block = reactor, client_tls, may_block
        self.fast_path = fast_path
        self.tls_clock = CoalescingClock(reactor)  # the TLS flushes of a turn, in one call
        self.events = queue.SimpleQueue()
        self.pending = pending  # handler -> Deferred of (ok, message); the waiter pops it
        self.connecting = {}    # the same Deferreds, until the TCP connect ends
        self.outbox = collections.deque()   # (handler, data, is_binary) to send
        self.queued = self.flushed = 0      # bytes into and out of the outbox (by one thread each)
        self.flushing = False
        self.protocols = {}     # handler -> protocol, once connected
        self.open = set()       # handlers a send may use (read from the Lua thread)
        self.connected_here = set()  # handlers this thread connected: nothing to wait for

    # Called from Lua (its own thread, or the reactor thread for reactive services).

    def start(self, uri):
        try:
            parts = urlsplit(uri.decode("utf-8"))
            port = parts.port
        except (UnicodeDecodeError, ValueError) as e:
            return None, f"Invalid URI: {e}".encode()
        if parts.scheme not in ("ws", "wss"):
            return None, b"Invalid schema: only ws:// and wss:// are supported"
        if not parts.hostname:
            return None, b"Invalid URI: no host"
        handler = next(_ids)
        port = port or (443 if parts.scheme == "wss" else 80)
        address = _literal(parts.hostname)
        if self.may_block and address is not None:
            return self._connect_here(handler, parts.scheme, parts.hostname, address, port,
                                      parts.geturl())
        self.pending[handler] = self.connecting[handler] = Deferred()
        self._on_reactor(self._connect, handler, parts.scheme, parts.hostname, port,
                         parts.geturl())
        return handler

    def _connect_here(self, handler, scheme, host, address, port, url):
        """The TCP connect in this (the instance's) thread; the reactor adopts it."""
        try:
            sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
        except OSError as e:
            return None, f"Can't create socket: {type(e).__name__}: {e}".encode()
        sock.setblocking(False)
        self.open.add(handler)
        self.connected_here.add(handler)
        self._on_reactor(self._adopt, handler, sock, scheme, host, url)
        return handler

    def wait(self, handler):
        """Block this (non-reactor) thread until the TCP connect ends."""
        if handler in self.connected_here:
            self.connected_here.discard(handler)
            return True, None
        done = queue.SimpleQueue()
        self._on_reactor(lambda: self.pending.pop(handler).addBoth(done.put))
        try:
            return done.get(timeout=CONNECT_TIMEOUT + 5)
        except queue.Empty:
            self.close(handler)
            return False, b"Can't create socket: timed out"

    def next_event(self, wait):
        """The next event; the first of a loop may wait 1 ms, except on the
        reactor thread (reactive services), which never waits."""
        try:
            if wait and self.may_block:
                return self.events.get(timeout=0.001)
            return self.events.get_nowait()
        except queue.Empty:
            return None

    def send(self, handler, data, opcode):
        """Queue the message; one reactor wake-up carries every message queued
        until the reactor gets to it (a benchmark loop sends hundreds)."""
        if handler not in self.open:
            return False, b"Communication error: the connection is closed"
        protocol = self.protocols.get(handler)  # (None until the reactor adopts it)
        waiting = self.queued - self.flushed + (protocol.outbound_backlog if protocol else 0)
        if waiting and waiting + len(data) > MAX_SEND_BUFFER:
            return False, b"send buffer full: the server is not taking what was sent"
        self.queued += len(data)
        self.outbox.append((handler, data, opcode == 2))
        if not self.flushing:
            self.flushing = True
            self._on_reactor(self._flush)
        return True

    def close(self, handler):
        self.open.discard(handler)
        self._on_reactor(self._close, handler)

    # On the reactor thread.

    def _on_reactor(self, f, *args):
        if isInIOThread():
            f(*args)
        else:
            self.reactor.callFromThread(f, *args)

    def _factory(self, handler, url):
        factory = WebSocketClientFactory(url)
        factory.noisy = False
        factory.fast_path = self.fast_path
        factory.protocol = _Protocol
        factory.pool, factory.handler = self, handler
        factory.setProtocolOptions(maxMessagePayloadSize=MAX_MESSAGE,
                                   maxFramePayloadSize=MAX_MESSAGE,
                                   openHandshakeTimeout=CONNECT_TIMEOUT)
        return factory

    def _tls(self, factory, host):
        """``factory`` behind the client TLS layer for ``host``."""
        if self.fast_path:
            return StdTLSFactory(self.client_tls, True, factory, self.tls_clock, hostname=host)
        return TLSMemoryBIOFactory(self.client_tls.creator(host), True, factory)

    def _adopt(self, handler, sock, scheme, host, url):
        try:
            if handler in self.open:  # (not closed by the service meanwhile)
                factory = self._factory(handler, url)
                adopt(self.reactor, sock.fileno(), sock.family,
                      self._tls(factory, host) if scheme == "wss" else factory, self.fast_path)
        except OSError:  # the server reset it since the connect
            self.open.discard(handler)
            self.events.put((b"error", handler, b"Communication error, socket closed by peer",
                             None))
        finally:
            sock.close()  # the transport has its own copy

    def _connect(self, handler, scheme, host, port, url):
        factory = self._factory(handler, url)
        endpoint = _endpoint(self.reactor, host, port, self.fast_path)
        connected = endpoint.connect(self._tls(factory, host) if scheme == "wss" else factory)
        connected.addCallbacks(self._connected, self._refused,
                               callbackArgs=(handler,), errbackArgs=(handler,))

    def _connected(self, _, handler):
        protocol = self.protocols.get(handler)  # (set by its connectionMade)
        if protocol is None:  # lost already: closed() had nothing to report to
            self._settle(handler, False, b"Can't create socket: closed")
            return
        # Usable before the wait ends: a reactive service resumes inside _settle.
        self.open.add(handler)
        if not self._settle(handler, True):  # the service gave up waiting
            self.open.discard(handler)
            protocol.dropConnection(abort=True)

    def _refused(self, failure, handler):
        self._settle(handler, False, _failure_text(failure))

    def _settle(self, handler, ok, message=None):
        """End ``cws:new``'s wait; False if it had already ended."""
        connecting = self.connecting.pop(handler, None)
        if connecting is None:
            return False
        connecting.callback((ok, message))
        return True

    def opened(self, protocol):
        handler = protocol.factory.handler
        if handler not in self.open:  # closed by the service while connecting
            protocol.sendCloseFrame(code=1001, isReply=False)
            return
        self.events.put((b"open", handler, None, None))
        protocol.send_held()

    def closed(self, protocol, clean, code, reason):
        handler = protocol.factory.handler
        self.protocols.pop(handler, None)
        if handler not in self.open:  # closed by the service itself: no callback
            return
        self.open.discard(handler)
        if not protocol.was_open:
            self.events.put((b"error", handler, _handshake_failure(protocol, reason), None))
        elif protocol.remoteCloseCode is not None:
            reason = (protocol.remoteCloseReason or "").encode("utf-8")
            body = struct.pack("!H", protocol.remoteCloseCode) + reason
            self.events.put((b"close", handler, body, None))
        elif clean:
            self.events.put((b"close", handler, None, None))  # an empty close frame
        else:
            self.events.put((b"error", handler,
                             b"Communication error, socket closed by peer", None))

    def _flush(self):
        self.flushing = False
        outbox, protocols = self.outbox, self.protocols
        while outbox:
            handler, data, is_binary = outbox.popleft()
            self.flushed += len(data)
            protocol = protocols.get(handler)
            if protocol is None:
                continue
            if protocol.state == protocol.STATE_OPEN:
                protocol.sendMessage(data, is_binary)
            elif not protocol.was_open:
                protocol.hold(data, is_binary)
            # else closing: what the service sent before it knew is dropped

    def _close(self, handler):
        protocol = self.protocols.get(handler)
        if protocol is None:
            self._settle(handler, False, b"Can't create socket: closed")
        elif protocol.state == protocol.STATE_OPEN:
            protocol.sendCloseFrame(code=1001, isReply=False)
        elif not protocol.was_open:
            protocol.dropConnection(abort=True)


def install(context):
    """Create the ``cws`` global. A standalone instance waits for the
    handshake in its thread; a reactive one suspends (``context.wait``)."""
    pool = Pool(context.parts.reactor, context.parts.client_tls, context.pending,
                may_block=context.standalone, fast_path=context.parts.fast_path)
    wait = pool.wait if context.standalone else context.wait
    context.runtime.globals()[b"cws"] = context.runtime.execute(
        _CWS, pool.start, wait, pool.next_event, pool.send, pool.close)
    return pool
