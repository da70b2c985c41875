"""WebSocket frames made by hand, random streams of them (hypothesis
strategies), and probe protocols over Twisted's test transport that record
what they received and wrote: to compare the fast paths
(lapps.fast.frames, server side, and lapps.fast.client, client side) with
Autobahn's own, in test_fastpath.py and test_clientpath.py."""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOfferAccept
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from lapps.protocols.backpressure import OutboundCap
from lapps.fast.frames import FastPath


PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HANDSHAKE = (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")
#: A message the probe answers by starting the closing handshake, after its echo.
CLOSE_ME = b"close!"


class Transport(StringTransport):
    """Twisted's test transport; like a TCP transport, it lets a protocol
    unregister a producer it never registered (Autobahn does when it drops)."""

    def unregisterProducer(self):
        self.producer = None


class Recording:
    """Mixed into a probe protocol: echoes each message (closing after a
    ``CLOSE_ME``) and records it; counts the messages that took Autobahn's
    own path."""

    def onMessage(self, payload, isBinary):
        self.received.append((payload, isBinary))
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, isBinary)
            if payload.startswith(CLOSE_ME):
                self.sendClose(1000, "as asked")

    def _onMessageBegin(self, isBinary):
        self.slow_messages += 1
        super()._onMessageBegin(isBinary)


class Probe(Recording, FastPath, OutboundCap, WebSocketServerProtocol):
    """The server side's probe."""


def opened(fast, max_size=0, fragment=0, utf8=True, deflate=False):
    """A probe after its opening handshake (with permessage-deflate
    negotiated if ``deflate``), and its transport (emptied)."""
    factory = WebSocketServerFactory(server="probe")
    factory.protocol, factory.fast_path = Probe, fast
    factory.setProtocolOptions(webStatus=False, failByDrop=False, allowNullOrigin=True,
                               versions=[13], maxMessagePayloadSize=max_size,
                               maxFramePayloadSize=max_size, autoFragmentSize=fragment,
                               utf8validateIncoming=utf8,
                               perMessageCompressionAccept=lambda offers: (
                                   PerMessageDeflateOfferAccept(offers[0]) if deflate else None))
    probe = factory.buildProtocol(PEER)
    probe.received, probe.slow_messages = [], 0
    transport = Transport(peerAddress=PEER)
    probe.makeConnection(transport)
    probe.dataReceived(HANDSHAKE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: "
                                         b"permessage-deflate\r\n\r\n") if deflate else HANDSHAKE)
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return probe, transport


def outcome(probe, transport, written=bytes):
    """What a probe did; ``written(data)`` is what is compared of its writes."""
    return {"received": probe.received, "written": written(transport.value()),
            "state": probe.state,
            "sent close": (probe.localCloseCode, probe.localCloseReason),
            "got close": (probe.remoteCloseCode, probe.remoteCloseReason),
            "failed": probe.failedByMe, "dropped": probe.droppedByMe, "clean": probe.wasClean,
            "disconnecting": transport.disconnecting, "stats": probe.trafficStats.__json__()}


def run(fast, stream, cuts, open_probe=opened, written=bytes, **options):
    """``stream`` cut at ``cuts`` into a probe (``open_probe``): its outcome, and it."""
    probe, transport = open_probe(fast, **options)
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, end in zip(bounds, bounds[1:]):
        probe.dataReceived(stream[start:end])
    return outcome(probe, transport, written), probe


def frame(opcode, payload=b"", fin=True, rsv=0, mask=b"\x1f\x8b\x00\xff", wide=False):
    """A client frame; ``mask=None`` leaves it unmasked, ``wide`` encodes
    its length in more octets than needed (a protocol violation)."""
    n = len(payload)
    if n < 126 and not wide:
        length = bytes([n])
    elif n < 0x10000 and not (wide and n >= 126):
        length = bytes([126]) + n.to_bytes(2, "big")
    else:
        length = bytes([127]) + n.to_bytes(8, "big")
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    if mask is None:
        return head + length + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + bytes([length[0] | 0x80]) + length[1:] + mask + masked


def sized(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


SIZES = [0, 1, 125, 126, 127, 255, 256, 1000, 1001, 65535, 65536, 70000]
payloads = st.one_of(st.binary(max_size=200), st.sampled_from(SIZES).map(sized))
texts = st.one_of(st.text(max_size=100), st.sampled_from(["é" * 63, "€" * 42, "𝄞" * 32,
                                                          "a" * 126])).map(str.encode)
#: Invalid UTF-8: a stray continuation, a truncated sequence, an overlong
#: encoding, a surrogate, a code point past U+10FFFF.
BROKEN = [b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
broken_texts = st.tuples(texts, st.sampled_from(BROKEN), texts).map(b"".join)
masks = st.one_of(st.binary(min_size=4, max_size=4), st.just(b"\x00\x00\x00\x00"))
#: What may be wrong with a frame of the fast path's kind (None: nothing);
#: "masking": masked from a server, unmasked from a client.
DEFECTS = [None] * 6 + ["fragment", "rsv", "opcode", "masking", "wide", "broken text",
                        "close me"]


def masking(draw, client):
    """A mask for a frame from the client (``client``), None from the server."""
    return draw(masks) if client else None


@st.composite
def data_frames(draw, client=True):
    """A final text or binary frame, masked if from the ``client``: the
    kind the fast path takes, or one with a single defect that must leave
    it to Autobahn (and one whose message makes the probe close)."""
    opcode = draw(st.sampled_from([1, 2]))
    payload = draw(texts if opcode == 1 else payloads)
    options = {"mask": masking(draw, client)}
    defect = draw(st.sampled_from(DEFECTS))
    if defect == "fragment":
        options["fin"] = False
    elif defect == "rsv":
        options["rsv"] = draw(st.sampled_from([1, 2, 4, 7]))
    elif defect == "opcode":
        opcode = draw(st.sampled_from([0, 3, 7, 11, 15]))
    elif defect == "masking":
        options["mask"] = masking(draw, not client)
    elif defect == "wide":
        options["wide"] = True
    elif defect == "broken text":
        opcode, payload = 1, draw(broken_texts)
    elif defect == "close me":
        payload = CLOSE_ME + payload
    return frame(opcode, payload, **options)


@st.composite
def messages(draw, client=True):
    """A well-formed data message in 2 or 3 fragments, sometimes with a
    ping between them."""
    opcode = draw(st.sampled_from([1, 2]))
    payload = draw(texts if opcode == 1 else payloads)
    pieces = draw(st.integers(2, 3))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=pieces - 1,
                                max_size=pieces - 1)))
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    frames = [frame(opcode if i == 0 else 0, part, fin=i == len(parts) - 1,
                    mask=masking(draw, client)) for i, part in enumerate(parts)]
    if draw(st.booleans()):
        frames.insert(1, frame(9, b"ping", mask=masking(draw, client)))
    return b"".join(frames)


@st.composite
def odd_frames(draw):
    """Any frame at all: control, reserved opcodes, RSV, unmasked, wide lengths."""
    return frame(draw(st.sampled_from([0, 1, 2, 3, 7, 8, 9, 10, 11, 15])), draw(payloads),
                 fin=draw(st.booleans()), rsv=draw(st.sampled_from([0, 0, 0, 1, 4, 7])),
                 mask=draw(st.one_of(masks, st.none())), wide=draw(st.booleans()))


def stream_of(client):
    """Strategy: up to 12 frames from the client (``client``) or the server,
    mostly of the fast path's kind, and a close among them now and then."""
    mask = b"\x1f\x8b\x00\xff" if client else None
    closes = st.one_of(st.just(frame(8, mask=mask)), st.integers(0, 5000).map(
        lambda code: frame(8, code.to_bytes(2, "big") + b"bye", mask=mask)),
        st.just(frame(8, b"\x03\xe8\xff", mask=mask)))
    fast = data_frames(client)
    return st.lists(st.one_of(fast, fast, fast, fast, messages(client), odd_frames(), closes),
                    max_size=12).map(b"".join)
