"""lapps.fast.stdtls: the fast path's TLS on the standard library's ssl.

First the layer alone, with a real TLS client (an ``SSLObject``) on the
other side of an in-memory transport: records cut anywhere still give
every octet, in order; a corrupt record ends the connection with an
``ssl.SSLError``; a close_notify is answered. Then the real server over
loopback: wss echoes of one octet to several records, one at a time and
many per read, with ``fast_path`` on and off; and with a raw TLS client
that controls every octet it sends, a large message dribbled in small TCP
writes, close_notify after the WebSocket close, and a corrupt record that
ends one connection and no other."""

import asyncio
import os
import socket
import ssl

import pytest
import websockets
from hypothesis import given, settings, strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from conftest import reactive
from lapps import tls
from lapps.fast.stdtls import StdTLSFactory
from support.pki import PKI, trusting
from support.raw import request_head



@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("stdtls"))


def server_tls(pki, version=3):
    return tls.ServerTLS(tls.server_options(pki.cert_file, pki.key_file, version))


# --- the layer alone ----------------------------------------------------------------

class Collect(Protocol):
    """The wrapped protocol: keeps what it receives and how it ended."""

    def connectionMade(self):
        self.received, self.reason = [], None

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.reason = reason


class Link:
    """A StdTLS server connection on an in-memory TCP transport, and a real
    TLS client whose records the test feeds to it."""

    def __init__(self, pki, protocol=Collect):
        self.clock = Clock()
        factory = StdTLSFactory(server_tls(pki), False, Factory.forProtocol(protocol),
                                clock=self.clock)
        self.server = factory.buildProtocol(None)
        self.tcp = StringTransport()
        self.server.makeConnection(self.tcp)
        self.app = self.server.wrappedProtocol
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = trusting(pki.ca).wrap_bio(self.incoming, self.outgoing,
                                                server_hostname="localhost")
        while True:
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.server.dataReceived(self.outgoing.read())
                self.to_client()
        self.server.dataReceived(self.outgoing.read())  # the client's Finished
        self.to_client()

    def to_client(self):
        self.incoming.write(self.tcp.value())
        self.tcp.clear()

    def records(self, plaintext):
        self.client.write(plaintext)
        return self.outgoing.read()

    def client_reads(self):
        self.to_client()
        out = []
        while True:
            try:
                data = self.client.read(2**16)
            except ssl.SSLWantReadError:
                return b"".join(out), False
            except ssl.SSLZeroReturnError:  # close_notify after ours
                data = b""
            if not data:
                return b"".join(out), True  # close_notify
            out.append(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 40000), min_size=1, max_size=6), st.data())
def test_records_cut_anywhere_give_every_octet_in_order(pki, sizes, data):
    link = Link(pki)
    messages = [os.urandom(n) for n in sizes]
    stream = b"".join(link.records(m) for m in messages)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    fed = 0
    for cut in cuts + [len(stream)]:
        link.server.dataReceived(stream[fed:cut])
        fed = cut
    assert b"".join(link.app.received) == b"".join(messages)
    assert link.app.reason is None


def test_writes_of_a_turn_go_out_together_on_the_next(pki):
    link = Link(pki)
    link.server.write(b"one ")
    link.server.writeSequence([b"two ", b"three"])
    assert link.tcp.value() == b""  # gathered until the clock's next turn
    link.clock.advance(0)
    assert link.client_reads() == (b"one two three", False)


def test_a_corrupt_record_ends_the_connection_with_an_ssl_error(pki):
    link = Link(pki)
    record = bytearray(link.records(b"hello"))
    record[-1] ^= 1  # the authentication tag no longer matches
    link.server.dataReceived(bytes(record))
    assert link.tcp.disconnecting
    link.server.connectionLost(None)
    assert link.app.received == []
    assert link.app.reason.check(ssl.SSLError)


def test_the_peers_close_notify_is_answered_and_tcp_closed(pki):
    link = Link(pki)
    with pytest.raises(ssl.SSLWantReadError):
        link.client.unwrap()  # sends close_notify, waits for the answer
    link.server.dataReceived(link.outgoing.read())
    assert link.client_reads() == (b"", True)
    assert link.tcp.disconnecting


class Echo(Collect):
    """Answers each read at once, as a service answering a message does."""

    def dataReceived(self, data):
        super().dataReceived(data)
        self.transport.write(data)


def test_an_answer_made_in_the_read_that_ends_with_close_notify_precedes_it(pki):
    link = Link(pki, Echo)
    message = link.records(b"last words")
    with pytest.raises(ssl.SSLWantReadError):
        link.client.unwrap()  # close_notify, in the same TCP read as the message
    link.server.dataReceived(message + link.outgoing.read())
    assert link.client_reads() == (b"last words", True)


def test_a_tcp_end_without_close_notify_is_connection_lost(pki):
    link = Link(pki)
    link.server.connectionLost(Failure(ConnectionDone()))
    assert link.app.reason.check(ConnectionLost)


class StreamingProducer:
    """A registered streaming producer that does nothing (lapps registers one per connection)."""

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def test_writes_between_lose_connection_and_unregister_producer_precede_close_notify(pki):
    link = Link(pki)
    link.server.registerProducer(StreamingProducer(), True)
    link.server.loseConnection()
    link.server.write(b"last words")  # allowed while a producer is registered
    link.server.unregisterProducer()  # now close_notify
    link.clock.advance(0)
    assert link.client_reads() == (b"last words", True)
    link.server.connectionLost(Failure(ConnectionDone()))
    assert not link.app.reason.check(ssl.SSLError)


def test_an_abort_drops_gathered_writes_and_is_no_tls_error(pki):
    link = Link(pki)
    link.server.write(b"never sent")
    link.server.abortConnection()
    link.clock.advance(0)  # the gathered writes' turn comes before TCP's connectionLost
    assert link.client_reads() == (b"", True)  # close_notify alone
    link.server.connectionLost(Failure(ConnectionDone()))
    assert link.app.reason.check(ConnectionLost)  # as Twisted's TLS says of an abort


# --- the real server ---------------------------------------------------------------

class RawWSS:
    """A TLS client over a TCP socket that writes its records in chunks of
    ``chunk`` octets (one send each, TCP_NODELAY) and speaks just enough
    WebSocket to upgrade, send masked frames and read server frames."""

    def __init__(self, port, ca, chunk=None):
        self.chunk = chunk
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = trusting(ca).wrap_bio(self.incoming, self.outgoing,
                                              server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send()
                self._receive()
        self._send()
        self.buffer = b""

    def _send(self):
        data = self.outgoing.read()
        step = self.chunk or len(data) or 1
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])

    def _receive(self):
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return data

    def write(self, plaintext):
        self.tls.write(plaintext)
        self._send()

    def read(self):
        """Plaintext, or b"" at close_notify."""
        while True:
            try:
                return self.tls.read(2**16)
            except ssl.SSLWantReadError:
                self._receive()

    def upgrade(self, path="/echo"):
        self.write(request_head(path) + b"\r\n")
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101")

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        length = (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
                  if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.write(bytes([0x80 | opcode]) + length + mask + masked)

    def read_frame(self):
        while True:
            frame = self._frame()
            if frame is not None:
                return frame
            more = self.read()
            assert more, "close_notify before a whole frame"
            self.buffer += more

    def _frame(self):
        b = self.buffer
        if len(b) < 2:
            return None
        n, start = b[1] & 0x7F, 2
        if n == 126:
            n, start = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            n, start = int.from_bytes(b[2:10], "big"), 10
        if len(b) < start + n:
            return None
        self.buffer = b[start + n:]
        return b[0] & 0x0F, b[start:start + n]

    def close(self):
        self.sock.close()


@pytest.fixture
def server(start_server, pki):
    return start_server({"echo": reactive("/echo")}, pki.server(fast_path=True))


SIZES = [1, 125, 1024, 16 * 1024 - 20, 16 * 1024 + 1, 100_000]


async def _echoes(url, context):
    """Messages of every size one at a time, then 50 sent before any answer
    (several records per read), then a clean close."""
    async with websockets.connect(url, ssl=context, max_size=None) as ws:
        for size in SIZES:
            await ws.send(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
            assert len(await ws.recv()) == size
        burst = [f"message {i} ".encode() * (i + 1) for i in range(50)]
        for message in burst:
            await ws.send(message)
        answers = [await ws.recv() for _ in burst]
    return answers, burst, ws.close_code


@pytest.mark.parametrize("fast_path", [True, False])  # StdTLS, and Twisted's TLS
def test_wss_echoes_in_order_and_closes_cleanly(start_server, pki, fast_path):
    server = start_server({"echo": reactive("/echo")}, pki.server(fast_path=fast_path))
    answers, sent, code = asyncio.run(  # a record left unread would hang: a deadline fails it
        asyncio.wait_for(_echoes(server.url("/echo", "wss"), trusting(pki.ca)), 30))
    assert answers == sent
    assert code == 1000
    server.wait_for(r"closed: code 1000", count=1)


def test_a_large_message_dribbled_in_small_tcp_writes_is_echoed(server, pki):
    client = RawWSS(server.port, pki.ca, chunk=997)
    client.upgrade()
    message = os.urandom(100_000)  # seven records, every one cut several times
    client.send_frame(2, message)
    assert client.read_frame() == (2, message)
    client.close()


def test_close_notify_follows_the_websocket_close(server, pki):
    client = RawWSS(server.port, pki.ca)
    client.upgrade()
    client.send_frame(8, (1000).to_bytes(2, "big"))
    assert client.read_frame() == (8, (1000).to_bytes(2, "big"))
    assert client.read() == b""  # close_notify
    client.tls.unwrap()  # our answer: the server then closes TCP
    client._send()
    assert client.sock.recv(1) == b""
    client.close()
    server.wait_for(r"closed: code 1000")


def test_a_corrupt_record_ends_its_connection_and_no_other(server, pki):
    bystander = RawWSS(server.port, pki.ca)
    bystander.upgrade()
    client = RawWSS(server.port, pki.ca)
    client.upgrade()
    client.tls.write(b"\x82\x80" + os.urandom(4))
    record = bytearray(client.outgoing.read())
    record[-1] ^= 1
    client.sock.sendall(bytes(record))
    with pytest.raises(ssl.SSLError):  # an alert, then the end
        while client.read():
            pass
    client.close()
    bystander.send_frame(2, b"still here")
    assert bystander.read_frame() == (2, b"still here")
    bystander.close()


def test_the_stdlib_context_keeps_the_configured_settings(pki):
    for version, minimum in ((3, ssl.TLSVersion.TLSv1_2), (4, ssl.TLSVersion.TLSv1_3)):
        context = server_tls(pki, version).context
        assert context.minimum_version == minimum
        assert context.options & ssl.OP_NO_RENEGOTIATION
        assert context.options & ssl.OP_NO_TICKET and context.num_tickets == 0


def test_a_certificate_swap_reaches_the_next_connection(pki, tmp_path):
    other = PKI(tmp_path)
    swappable = server_tls(pki)
    factory = StdTLSFactory(swappable, False, Factory.forProtocol(Collect), clock=Clock())
    first = factory.buildProtocol(None)
    first.makeConnection(StringTransport())
    swappable.options = tls.server_options(other.cert_file, other.key_file, 3)
    second = factory.buildProtocol(None)
    second.makeConnection(StringTransport())
    assert first.getHandle().context is not second.getHandle().context
    assert second.getHandle().context is swappable.context
