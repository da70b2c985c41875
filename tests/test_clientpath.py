"""The client fast path (lapps.fast.client, ``cws``'s connections)
gives the results Autobahn's client gives.

As for the server side (test_fastpath.py): the same server frames, cut
into reads in the same places, go to a client protocol with the fast path
on and to one with it off, over Twisted's test transport; messages, state,
close codes and counters must be the same, and so must what each wrote,
frame by frame once unmasked (the masks are random on both paths)."""

import base64
import hashlib
import re

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hypothesis import HealthCheck, given, settings, strategies as st

from lapps.protocols.backpressure import OutboundCap
from lapps.fast.client import EagerClient, FastClient, connecting
from support.frames import PEER, SIZES, Recording, Transport, frame, sized, stream_of
from support.frames import run as run_server_side

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ClientProbe(Recording, FastClient, OutboundCap, WebSocketClientProtocol):
    """The client side's probe."""


def opened(fast, max_size=0, utf8=True):  # (the server side's options that apply)
    """A client probe after its opening handshake, and its transport (emptied)."""
    factory = WebSocketClientFactory("ws://localhost/echo")
    factory.protocol, factory.fast_path = ClientProbe, fast
    factory.setProtocolOptions(maxMessagePayloadSize=max_size, maxFramePayloadSize=max_size,
                               utf8validateIncoming=utf8)
    probe = factory.buildProtocol(PEER)
    probe.received, probe.slow_messages = [], 0
    transport = Transport(peerAddress=PEER)
    probe.makeConnection(transport)
    key = re.search(rb"Sec-WebSocket-Key: (\S+)", transport.value()).group(1)
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    transport.clear()
    probe.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    assert probe.state == probe.STATE_OPEN
    transport.clear()
    return probe, transport


def client_frames(data):
    """The frames a client wrote: (first octet, whether masked, payload
    unmasked); a tail that is no whole frame is kept as it is."""
    frames, pos = [], 0
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, start = b1 & 0x7F, pos + 2
        if n == 126:
            n, start = int.from_bytes(data[start:start + 2], "big"), start + 2
        elif n == 127:
            n, start = int.from_bytes(data[start:start + 8], "big"), start + 8
        mask = data[start:start + 4] if b1 & 0x80 else b"\0\0\0\0"
        start += 4 if b1 & 0x80 else 0
        if start + n > len(data):
            break
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[start:start + n]))
        frames.append((b0, bool(b1 & 0x80), payload))
        pos = start + n
    return frames, data[pos:]


def run(fast, stream, cuts, **options):
    """As the server side's, with the writes compared frame by frame, unmasked."""
    return run_server_side(fast, stream, cuts, open_probe=opened, written=client_frames,
                           **options)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=stream_of(client=False), data=st.data(),
       options=st.fixed_dictionaries({"max_size": st.sampled_from([0, 100, 1000]),
                                      "utf8": st.sampled_from([True, True, False])}))
def test_fast_and_slow_client_paths_agree_on_random_server_frame_streams(stream, data, options):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    fast, _ = run(True, stream, cuts, **options)
    slow, _ = run(False, stream, cuts, **options)
    assert fast == slow


def test_server_frames_take_the_fast_path_and_masked_ones_autobahns():
    """Not vacuous: whole unmasked frames never reach Autobahn's frame
    callbacks; a masked server frame is Autobahn's, which fails it."""
    whole = b"".join(frame(2, sized(n), mask=None) for n in SIZES)
    _, probe = run(True, whole, [])
    assert probe.slow_messages == 0 and len(probe.received) == len(SIZES)
    assert run(False, whole, [])[1].slow_messages == len(SIZES)
    masked = run(True, frame(2, b"x"), [])[1]  # (Autobahn's client fails it by dropping)
    assert masked.received == [] and masked.failedByMe and masked.droppedByMe


def test_every_fast_frame_is_masked_with_a_fresh_key_and_the_length_it_needs():
    """RFC 6455 5.2 and 5.3: minimal length encoding at the 125/126 and
    65535/65536 edges, and no two frames with one mask."""
    probe, transport = opened(True)
    for n in SIZES:
        probe.sendMessage(sized(n), True)
    data = transport.value()
    frames, rest = client_frames(data)
    assert rest == b"" and [(b0, masked, p) for b0, masked, p in frames] == [
        (0x82, True, sized(n)) for n in SIZES]
    lengths = [data[i + 1] & 0x7F for i in _frame_starts(data)]
    assert lengths == [n if n < 126 else 126 if n < 0x10000 else 127 for n in SIZES]
    masks = [data[i + 2 + {126: 2, 127: 8}.get(n, 0):][:4]
             for i, n in zip(_frame_starts(data), lengths)]
    assert len(set(masks)) == len(masks)


def _frame_starts(data):
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        n = data[pos + 1] & 0x7F
        header = 2 + {126: 2, 127: 8}.get(n, 0)
        if n >= 126:
            n = int.from_bytes(data[pos + 2:pos + header], "big")
        pos += header + 4 + n
    return starts


def test_the_eager_connector_makes_eager_client_transports():
    """The end-to-end client is test_cws.py's; here, that on a POSIX
    reactor its TCP connections are transports that write at once, and
    that the reactor's cached log context follows Twisted's renaming."""
    from twisted.internet.selectreactor import SelectReactor
    from twisted.internet.protocol import ClientFactory
    reactor = SelectReactor()
    connector = connecting(reactor).connectTCP("127.0.0.1", 9, ClientFactory())
    transport = connector.transport
    assert type(transport) is EagerClient and transport.logstr == "Uninitialized"
    transport.log_context = ("cached",)
    transport.logstr = "ClientProbe,client"
    assert transport.log_context is None
    connector.stopConnecting()


def test_without_the_fast_path_cws_gets_twisteds_own_transports():
    """``fast_path: false`` is Twisted's and Autobahn's alone, for cws too:
    connections made by the reactor, and sockets it adopts."""
    import socket
    from twisted.internet import tcp
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.selectreactor import SelectReactor
    from lapps.fast.client import adopt
    from lapps.fast.transport import EagerServer
    reactor = SelectReactor()
    assert connecting(reactor, eager=False) is reactor
    made = []

    class Recorder(Protocol):
        def connectionMade(self):
            made.append(type(self.transport))

    with socket.create_server(("127.0.0.1", 0)) as listener:
        for eager in (True, False):
            with socket.create_connection(listener.getsockname()) as sock:
                sock.setblocking(False)
                adopt(reactor, sock.fileno(), sock.family, Factory.forProtocol(Recorder), eager)
    assert made == [EagerServer, tcp.Server]
