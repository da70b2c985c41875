"""Fuzzing (issue 6, item 11) with hypothesis: three surfaces where bad input
arrives, each checked for "only documented errors escape".

* The handshake, over real sockets against one ``twistd -n lapps`` for the
  module: well-formed upgrades get exactly 101; mutated and random requests
  get a documented HTTP status or a close; random frames after a good
  handshake get a documented close code. The server never logs a traceback,
  and a well-formed client still gets its echo.
* The LAppS-protocol decoder, over a real connection to the same server:
  random bytes, CBOR values of every kind (bignums, tags, deep nesting, huge
  declared lengths), each answered by exactly one reply, a -32700/-32600 error
  of the spec's shape with at most 200 characters of ``data`` or the service's
  answer; the connection stays open and the log clean.
* The config loader (``config.from_dict``/``load``): only ``ConfigError``
  escapes, each of its lines ``FILE: /pointer: message``.

The suite runs a short, derandomized pass (the same examples every run, no
example database). The long run explores with fresh random examples and keeps
what it finds in ``.hypothesis/``::

    LAPPS_FUZZ=long python3 -m pytest tests/test_fuzz.py
"""

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import struct
import zlib

import cbor2
import pytest
import websockets.sync.client
from hypothesis import HealthCheck, example, given, settings, strategies as st

from conftest import APPS, REPO, TEST_APPS, Server, reactive, write_config
from lapps import config as configuration
from lapps.protocols import messages
from lapps.schema import Array, MapOf, Nullable, Object, Scalar

LONG = os.environ.get("LAPPS_FUZZ") == "long"


def fuzz(examples):
    """``examples`` in the suite's short run; 100 times as many, random and
    remembered, in the long run."""
    if LONG:
        return settings(max_examples=100 * examples, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow])
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# =============================================================== the server

LIMIT = 64 * 1024          # each service's max_inbound_message_size: cheap to exceed
ORIGIN = "https://example.com"

#: Documented answers before the upgrade (README "HTTP and WebSocket behaviour"
#: and "Limits and defaults"). 503 is documented too, but not for this server:
#: its services all run and it is far from its connection limit.
STATUSES = {101, 400, 403, 404, 405, 414, 426, 431, 505}

#: Documented close codes for a raw echo service fed any frames (RFC 6455
#: protocol errors, and 1000 as the reply to the client's own close).
CLOSE_CODES = {1000, 1002, 1007, 1009}

#: Every service echoes (apps/echo); each name is a copy of the module.
SERVICES = {
    "echo": reactive("/echo", instances=2, max_inbound_message_size=LIMIT),
    "deflated": reactive("/deflated", permessage_deflate=True, max_inbound_message_size=LIMIT),
    "guarded": reactive("/guarded", allowed_origins=[ORIGIN], max_inbound_message_size=LIMIT),
}
PATHS = [s["request_target"] for s in SERVICES.values()]
#: The LAppS-protocol service (tests/apps/lprobe), which answers what it was sent.
LPROBE = reactive("/lprobe", protocol="LAppS", preload=["nap", "time"],
                  max_inbound_message_size=1 << 20)
#: One peer (this test) opens thousands of connections a minute: the per-peer
#: limits (tested on their own) would refuse some at accept.
UNLIMITED = {"limits": {"peer_connection_rate": 1e6, "peer_connection_burst": 1_000_000,
                        "peer_max_connections": 1_000_000}}


class Watched:
    """The module's server, with the cheap "still serving, log clean" check."""

    def __init__(self, server):
        self.server = server
        self.examples = 0

    def example_done(self, every=25):
        self.examples += 1
        if self.examples % every == 0:
            self.assert_serving()

    def assert_serving(self):
        """A well-formed client gets its echo; then, once the server has
        logged that client's close (so everything before it is logged too),
        no log line shows a traceback or an error."""
        server = self.server
        message = f"still serving after {self.examples} examples"
        with websockets.sync.client.connect(server.url("/echo"), open_timeout=10) as ws:
            host, port = ws.socket.getsockname()[:2]
            ws.send(message)
            assert ws.recv(timeout=10) == message
        server.wait_for(rf"{re.escape(host)}:{port} on /echo \(handler \d+\) closed: code 1000")
        bad = server.bad_lines()
        assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the whole module (not one per example)."""
    root = tmp_path_factory.mktemp("fuzz")
    for name in SERVICES:
        (root / "apps" / name).mkdir(parents=True)
        shutil.copy(APPS / "echo" / "echo.lua", root / "apps" / name / f"{name}.lua")
    shutil.copytree(TEST_APPS / "lprobe", root / "apps" / "lprobe")
    server = Server(write_config(root, dict(SERVICES, lprobe=LPROBE), UNLIMITED,
                                 applications=root / "apps"))
    watched = Watched(server)
    yield watched
    watched.assert_serving()
    assert server.stop() in (0, -15)  # exits by the SIGTERM it got (README)
    bad = server.bad_lines()
    assert not bad, "\n".join(bad)


class Client:
    """One raw connection to the server and everything it has sent back."""

    def __init__(self, server, timeout=15.0):
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.received = bytearray()
        self.reset = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.sock.close()

    def send(self, data: bytes, half_close=False):
        try:
            self.sock.sendall(data)
            if half_close:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # a broken pipe, a reset: the server answered and closed first
            pass

    def read_until(self, done):
        """Read until ``done(received)`` or until the server closes (a reset
        is a close too: what the server sent just before it may be lost)."""
        try:
            while not done(self.received):
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.received += chunk
        except ConnectionResetError:
            self.reset = True
        return bytes(self.received)


def exchange(server, data: bytes):
    """Send a request and read the server's HTTP head, or until it closes. A
    request whose end the server cannot see (no blank line) is followed by a
    half-close, so that the server drops it at once instead of waiting for
    the handshake timeout; a complete one is not (Twisted drops what it has
    not written yet when the peer's end of stream arrives)."""
    with Client(server) as client:
        client.send(data, half_close=b"\r\n\r\n" not in data)
        return client.read_until(lambda received: b"\r\n\r\n" in received)


_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


def answer(received: bytes):
    """(status, head, rest) of an HTTP answer, or None if the server sent nothing."""
    if not received:
        return None
    end = received.find(b"\r\n\r\n")
    assert end >= 0, f"not an HTTP answer: {received[:200]!r}"
    head = received[:end + 2]
    match = _STATUS_LINE.match(head)
    assert match, f"not an HTTP status line: {head[:200]!r}"
    return int(match.group(1)), head, received[end + 4:]


def assert_documented(received: bytes):
    """A documented status (a refusal in plain text from lapps), or a close."""
    parsed = answer(received)
    if parsed is not None:
        status, head, _ = parsed
        assert status in STATUSES, head.decode("latin-1")
        if status != 101:
            assert b"\r\nServer: lapps\r\n" in head and \
                b"\r\nContent-Type: text/plain; charset=utf-8\r\n" in head, head.decode("latin-1")


# ---------------------------------------------------------- handshake requests

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKENS = st.text(_TCHAR, min_size=1, max_size=16)
VISIBLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)
KEYS = st.binary(min_size=16, max_size=16).map(lambda b: base64.b64encode(b).decode())
CASES = st.sampled_from([str, str.lower, str.upper, str.title])


def accept_for(key: str) -> bytes:
    magic = key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1(magic).digest())


@st.composite
def good_requests(draw):
    """An upgrade every service must accept: (path, headers, key). Header
    order, case and spacing vary; extra headers are harmless ``X-`` ones."""
    path = draw(st.sampled_from(PATHS))
    query = draw(st.sampled_from(["", "?a=b", "?x=%20y&x=z", "?"]))
    key = draw(KEYS)
    case = draw(CASES)
    headers = [
        (case("Host"), draw(st.sampled_from(["localhost", "127.0.0.1:5083", "[::1]:80", "h"]))),
        (case("Upgrade"), draw(st.sampled_from(["websocket", "WebSocket", "WEBSOCKET"]))),
        (case("Connection"), draw(st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade"]))),
        (case("Sec-WebSocket-Key"), key),
        (case("Sec-WebSocket-Version"), "13"),
    ]
    if path == "/guarded" or draw(st.booleans()):
        headers.append((case("Origin"), draw(st.sampled_from(
            [ORIGIN, "https://EXAMPLE.com", "https://example.com:443"]))))
    if path == "/deflated" and draw(st.booleans()):
        headers.append(("Sec-WebSocket-Extensions", draw(st.sampled_from(
            ["permessage-deflate", "permessage-deflate; client_max_window_bits",
             "permessage-deflate; server_no_context_takeover, permessage-deflate"]))))
    headers += draw(st.lists(st.tuples(TOKENS.map("X-".__add__), VISIBLE), max_size=5))
    headers = draw(st.permutations(headers))
    return path + query, headers, key


def render(method, target, version, headers, space=" ", eol="\r\n"):
    lines = [f"{method} {target} {version}"] + [f"{name}:{space}{value}" for name, value in headers]
    return (eol.join(lines) + eol + eol).encode("utf-8", "surrogatepass")  # lone surrogates too


@given(request=good_requests(), space=st.sampled_from(["", " ", "  ", "\t"]))
@fuzz(60)
def test_well_formed_upgrades_get_101(served, request, space):
    target, headers, key = request
    status, head, rest = answer(exchange(served.server, render("GET", target, "HTTP/1.1",
                                                                headers, space)))
    assert status == 101, head.decode("latin-1")
    assert b"\r\nSec-WebSocket-Accept: " + accept_for(key) + b"\r\n" in head
    served.example_done()


#: Odd text for header names and values: controls, NUL, CR and LF alone,
#: separators, non-ASCII (sent as UTF-8; raw bytes come from the "bytes" edit).
ODD = st.text(st.sampled_from('\0\r\n\t :;,="\x7f\xff\u00e9\u2028') | st.characters(),
              max_size=40)
METHODS = st.sampled_from(["GET", "get", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "",
                           "G\0T", "GET GET"]) | TOKENS
TARGETS = st.sampled_from(["/", "*", "/echo#frag", "/echo?x=%ff", "//echo", "http://h/echo",
                           "/ech%6f", "/echo/", "/ECHO", "", "/echo?a=b#", "/%00", "/\u00e9"]) \
    | st.text(max_size=40) | st.sampled_from(PATHS)
VERSIONS = st.sampled_from(["HTTP/1.0", "HTTP/2", "HTTP/1.1 x", "http/1.1", "HTTP/1.10",
                            "HTTP/", "", "HTTP/1.1\0", "HTTP/0.9", "HTTP/1.1"])
WS_VERSIONS = st.sampled_from(["12", "14", "8", "13, 13", "", "abc", "-1", "013", " 13 ",
                               "99999999999999999999", "\uff11\uff13", "13\0"])
BAD_KEYS = st.sampled_from(["", "short", "=" * 24, "A" * 22 + "==", "A" * 24, "A" * 21 + "!==",
                            "A" * 22 + "==" + "A", "\0" * 22 + "=="]) | ODD


@st.composite
def mutated_requests(draw):
    """A good request with one to three things broken; the last two kinds of
    edit work on its bytes."""
    target, headers, _ = draw(good_requests())
    method, version, space, eol = "GET", "HTTP/1.1", " ", "\r\n"
    headers, edits = list(headers), []
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(headers) - 1)) if headers else 0
        op = draw(st.sampled_from([
            "method", "target", "version", "drop", "duplicate", "value", "name", "fold",
            "ws_version", "key", "origin", "extensions", "protocol", "big", "eol", "space",
            "bytes", "truncate"]))
        if op == "method":
            method = draw(METHODS)
        elif op == "target":
            target = draw(TARGETS)
        elif op == "version":
            version = draw(VERSIONS)
        elif op == "drop" and headers:
            del headers[i]
        elif op == "duplicate" and headers:
            headers.insert(i, headers[i])
        elif op == "value" and headers:
            headers[i] = (headers[i][0], draw(ODD))
        elif op == "name" and headers:
            headers[i] = (draw(ODD | st.sampled_from(["", "Host ", " Host", "Ho:st"])),
                          headers[i][1])
        elif op == "fold" and headers:
            headers[i] = (headers[i][0], headers[i][1] + eol + draw(st.sampled_from(" \t"))
                          + draw(VISIBLE))
        elif op == "ws_version":
            headers.append(("Sec-WebSocket-Version", draw(WS_VERSIONS)))
        elif op == "key":
            headers.append(("Sec-WebSocket-Key", draw(BAD_KEYS)))
        elif op == "origin":  # in place of the good request's own, if it has one
            headers = [h for h in headers if h[0].lower() != "origin"]
            headers.append(("Origin", draw(st.sampled_from(
                ["null", "http://example.com", "https://evil.example", "https://[::1", "x",
                 "https://example.com:99999", "https://example.com/path", ""]) | ODD)))
        elif op == "extensions":
            headers.append(("Sec-WebSocket-Extensions", draw(st.sampled_from(
                ["permessage-deflate; client_max_window_bits=99", "permessage-deflate; x=1",
                 "permessage-deflate; server_max_window_bits", "foo, , ;", ";", "=",
                 'permessage-deflate; client_max_window_bits="8"',
                 "permessage-deflate; server_max_window_bits=15; server_max_window_bits=15"])
                | ODD)))
        elif op == "protocol":
            headers.append(("Sec-WebSocket-Protocol", draw(st.sampled_from(
                ["a, a", "", ",", "raw", "LAppS, raw"]) | ODD)))
        elif op == "big":  # huge, but under the line (8 KiB) and block (16 KiB) limits
            headers.append((draw(TOKENS.map("X-".__add__)),
                            draw(st.sampled_from("aZ9 ,;=")) * draw(st.integers(1000, 7000))))
        elif op == "eol":
            eol = draw(st.sampled_from(["\n", "\r", "\r\r\n"]))
        elif op == "space":
            space = draw(st.sampled_from(["", "\t", " \t ", "\0"]))
        elif op in ("bytes", "truncate"):
            edits.append((op, draw(st.integers(0, 500)), draw(st.binary(min_size=1, max_size=20))))
    request = render(method, target, version, headers, space, eol)
    for op, at, data in edits:  # a truncated request: the stream ends mid-request
        request = request[:at] + data + request[at:] if op == "bytes" else request[:at]
    return request


@given(request=mutated_requests())
@fuzz(200)
def test_mutated_upgrades_get_a_documented_answer(served, request):
    assert_documented(exchange(served.server, request))
    served.example_done()


@given(data=st.binary(max_size=300), tail=st.sampled_from([b"", b"\r\n\r\n"]))
@fuzz(60)
def test_random_bytes_get_a_documented_answer(served, data, tail):
    assert_documented(exchange(served.server, data + tail))
    served.example_done()


# ------------------------------------------------------------ frames after 101

#: ``server_no_context_takeover``: each message the server compresses can be
#: inflated alone.
_DEFLATE_OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover")]
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: removed from, and added back to, each message


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflated(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=-15).decompress(data + _TAIL)


MASKS = st.binary(min_size=4, max_size=4)


def frame(fin, rsv, opcode, payload, mask=None, form="minimal", extra=0):
    """A frame's bytes. ``form``: "minimal", "16", "64", or "msb" (the 64-bit
    length's forbidden top bit set); ``extra`` makes the length lie."""
    declared = len(payload) + extra
    if form == "16" or (form == "minimal" and 126 <= declared < 65536):
        length = bytes([126]) + struct.pack("!H", declared & 0xFFFF)
    elif form in ("64", "msb") or declared >= 65536:
        length = bytes([127]) + struct.pack("!Q", declared | (1 << 63 if form == "msb" else 0))
    else:
        length = bytes([declared])
    head = bytes([fin << 7 | rsv << 4 | opcode])
    if mask is None:
        return head + length + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + bytes([0x80 | length[0]]) + length[1:] + mask + body


@st.composite
def good_streams(draw, deflate):
    """Well-formed messages framed in legal but varied ways: fragments of any
    size (cutting UTF-8 sequences), pings between fragments, some messages
    compressed. Returns (messages, frames)."""
    messages, frames = [], []
    for _ in range(draw(st.integers(0, 4))):
        opcode = draw(st.sampled_from([1, 2]))
        payload = draw(st.text(max_size=80)).encode() if opcode == 1 \
            else draw(st.binary(max_size=300))
        messages.append((opcode, payload))
        compressed = deflate and draw(st.booleans())
        wire = deflated(payload) if compressed else payload
        cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=3)))
        pieces = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
        for i, piece in enumerate(pieces):
            frames.append(frame(i == len(pieces) - 1, 4 if compressed and i == 0 else 0,
                                opcode if i == 0 else 0, piece, draw(MASKS)))
            if draw(st.integers(0, 3)) == 0:
                frames.append(frame(1, 0, 9, draw(st.binary(max_size=125)), draw(MASKS)))
    return messages, frames


TEXTS = st.text(max_size=60).map(str.encode)

#: What a broken frame gets wrong (some "flaws" are legal in some places).
FLAWS = ["anything", "rsv", "opcode", "unmasked", "long_length", "top_bit_length", "lie",
         "bad_utf8", "over_limit", "close", "big_control", "fragmented_control",
         "continuation", "bad_deflate", "deflate_bomb"]


@st.composite
def broken_frames(draw):
    """A frame with one flaw, or ("anything") any opcode, RSV bits, payload,
    mask, length form and true or lying length. Returns (bytes, whether its
    length lies)."""
    flaw = draw(st.sampled_from(FLAWS))
    fin, rsv, mask, form, lie = 1, 0, draw(MASKS), "minimal", 0
    opcode = draw(st.sampled_from([1, 2]))
    payload = draw(TEXTS if opcode == 1 else st.binary(max_size=200))
    if flaw == "anything":
        fin, rsv = draw(st.integers(0, 1)), draw(st.integers(0, 7))
        opcode = draw(st.integers(0, 15))
        payload = draw(TEXTS | st.binary(max_size=200))
        mask = draw(st.none() | MASKS)
        form = draw(st.sampled_from(["minimal", "16", "64", "msb"]))
        lie = draw(st.sampled_from([0, 1, 100]))
    elif flaw == "rsv":
        rsv = draw(st.integers(1, 7))
    elif flaw == "opcode":
        opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
    elif flaw == "unmasked":
        mask = None
    elif flaw == "long_length":  # RFC 6455 asks for the shortest form
        form = draw(st.sampled_from(["16", "64"]))
    elif flaw == "top_bit_length":
        form = "msb"
    elif flaw == "lie":
        lie = draw(st.integers(1, 100))
    elif flaw == "bad_utf8":
        opcode, at = 1, draw(st.integers(0, len(payload)))
        payload = payload[:at] + draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80",
                                                       b"\xf4\x90\x80\x80", b"\xe2\x82"])) \
            + payload[at:]
    elif flaw == "over_limit":
        payload = b"p" * draw(st.integers(LIMIT + 1, LIMIT + 10))
    elif flaw == "close":
        opcode = 8
        payload = draw(st.binary(max_size=1) | st.builds(
            lambda code, reason: struct.pack("!H", code) + reason,
            st.integers(0, 65535), TEXTS | st.binary(max_size=20)))
    elif flaw == "big_control":
        opcode, payload = draw(st.sampled_from([8, 9, 10])), draw(st.binary(min_size=126,
                                                                           max_size=200))
    elif flaw == "fragmented_control":
        fin, opcode = 0, draw(st.sampled_from([8, 9, 10]))
    elif flaw == "continuation":
        opcode = 0
    elif flaw == "bad_deflate":
        rsv = 4
    elif flaw == "deflate_bomb":  # small on the wire, past the limit inflated
        rsv, payload = 4, deflated(b"z" * draw(st.integers(LIMIT + 1, 4 * LIMIT)))
    return frame(fin, rsv, opcode, payload, mask, form, lie), lie > 0


CLIENT_CLOSE = frame(1, 0, 8, struct.pack("!H", 1000), bytes(4))
MARK = b"end of the fuzzed frames"
PING = frame(1, 0, 9, MARK, bytes(4))


def parse_frames(data: bytes):
    """(fin, rsv, opcode, payload) of each whole frame the server sent."""
    out, i = [], 0
    while i + 2 <= len(data):
        b0, b1 = data[i], data[i + 1]
        assert not b1 & 0x80, "a server frame must not be masked"
        n, i = b1 & 0x7F, i + 2
        if n >= 126:
            size = 2 if n == 126 else 8
            n, i = int.from_bytes(data[i:i + size], "big"), i + size
        if i + n > len(data):
            break
        out.append((b0 >> 7, b0 >> 4 & 7, b0 & 0x0F, data[i:i + n]))
        i += n
    return out


def server_frames(received: bytes):
    end = received.find(b"\r\n\r\n")
    return parse_frames(received[end + 4:]) if end >= 0 else []


def closed(received: bytes) -> bool:
    return any(opcode == 8 for _, _, opcode, _ in server_frames(received))


def closed_or_ponged(received: bytes) -> bool:
    return any(opcode == 8 or (opcode == 10 and payload == MARK)
               for _, _, opcode, payload in server_frames(received))


def echoed(frames):
    """The messages in the server's data frames, inflated where compressed."""
    messages, parts, opcode, compressed = [], [], None, False
    for fin, rsv, op, payload in frames:
        if op >= 8:
            continue
        if op != 0:
            opcode, compressed, parts = op, bool(rsv & 4), []
        parts.append(payload)
        if fin:
            data = b"".join(parts)
            messages.append((opcode, inflated(data) if compressed else data))
    return messages


def fuzz_frames(served, path, extra_headers, stream, broken):
    """Upgrade; send the well-formed ``stream`` with the ``broken`` frame (if
    any) put in it, then a ping; read until the server's close frame or its
    pong; after the pong, close. Without a broken frame every message comes
    back and the close is 1000; with one, the close code is documented.

    The client never closes before it has read the server's close frame: a
    close crossing data the server has not read makes the kernel reset the
    connection, and the reset discards what the server sent. A frame whose
    length lies leaves the server waiting for more: then the client
    half-closes, and the server drops the connection."""
    headers = [("Host", "localhost"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "MDEyMzQ1Njc4OWFiY2RlZg=="),
               ("Sec-WebSocket-Version", "13")] + extra_headers
    messages, frames = stream
    lied = False
    if broken is not None:
        at, (bad, lied) = broken
        frames = frames[:at] + [bad] + frames[at:]
    with Client(served.server) as client:
        client.send(render("GET", path, "HTTP/1.1", headers) + b"".join(frames) + PING,
                    half_close=lied)
        received = client.read_until(closed_or_ponged)
        if not lied and not closed(received):
            client.send(CLIENT_CLOSE)
            received = client.read_until(closed)
    served.example_done()
    if not received:  # the connection ended before the 101 was written out
        assert broken is not None and (lied or client.reset)
        return
    status, head, rest = answer(received)
    assert status == 101, head.decode("latin-1")
    frames_back = parse_frames(rest)
    closes = [payload for _, _, opcode, payload in frames_back if opcode == 8]
    if broken is None:
        assert echoed(frames_back) == messages
        assert closes and closes[0][:2] == struct.pack("!H", 1000), closes
    elif closes:
        code = int.from_bytes(closes[0][:2], "big")
        assert code in CLOSE_CODES, (code, closes[0][2:])
    else:  # cut short by a lying length, or a reset (Autobahn aborts once
        # a close it started meets the client's, e.g. a random close frame)
        assert lied or client.reset, rest[-200:]


BROKEN = st.none() | st.tuples(st.integers(0, 20), broken_frames())


@given(stream=good_streams(deflate=False), broken=BROKEN)
@fuzz(100)
def test_frames_echo_or_close_with_documented_codes(served, stream, broken):
    fuzz_frames(served, "/echo", [], stream, broken)


@given(stream=good_streams(deflate=True), broken=BROKEN)
@fuzz(60)
def test_deflate_frames_echo_or_close_with_documented_codes(served, stream, broken):
    fuzz_frames(served, "/deflated", _DEFLATE_OFFER, stream, broken)


# ======================================================= the LAppS-protocol decoder

@pytest.fixture(scope="module")
def lapps_ws(served):
    """One LAppS-protocol connection for all the decoder's examples: bad
    input must never close it."""
    with websockets.sync.client.connect(served.server.url("/lprobe"), max_size=None) as ws:
        yield ws


KEY_LEAVES = st.sampled_from(["lapps", "method", "params", "cid", "status", "result"]) \
    | st.text(max_size=8) | st.integers() | st.binary(max_size=8) | st.floats()
#: Integers of every CBOR size, and bignums (tags 2 and 3) of up to 20,000 digits.
INTEGERS = st.integers(-2 ** 64, 2 ** 64 - 1) | st.integers(-2 ** 70, 2 ** 70) \
    | st.integers(1, 20_000).map(lambda digits: 10 ** digits) \
    | st.integers(1, 20_000).map(lambda digits: -10 ** digits)
LEAVES = st.one_of(
    st.none(), st.booleans(), st.just(cbor2.undefined), INTEGERS, st.floats(),
    st.text(max_size=20), st.binary(max_size=20),
    st.integers(0, 255).filter(lambda n: not 20 <= n <= 31).map(cbor2.CBORSimpleValue))


def tagged(children):
    """Tags cbor2 would decode into Python objects (dates, bignums, decimals,
    fractions, regexes, UUIDs, sets, IP addresses, shared and string
    references), with right and wrong content, and unknown tags."""
    return st.builds(cbor2.CBORTag,
                     st.sampled_from([0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 256, 258,
                                      260, 261, 55799]) | st.integers(0, 2 ** 64 - 1),
                     children)


VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(KEY_LEAVES, children, max_size=4) | tagged(children),
    max_leaves=20)

#: Requests and notifications: valid ones, with values of any kind in params,
#: cid and extra members; and maps with the right keys holding right or wrong values.
LAPPS_MAPS = st.fixed_dictionaries({
    "lapps": st.sampled_from([1, 1.0]),
    "method": st.sampled_from(["echo", "login"]) | st.text(min_size=1, max_size=10),
}, optional={
    "params": st.lists(VALUES, max_size=3) | VALUES,
    "cid": st.integers() | st.floats() | VALUES,
    "extra": VALUES,
}) | st.fixed_dictionaries({}, optional={
    "lapps": st.sampled_from([1, 1.0, 2, 0, True, "1"]) | VALUES,
    "method": st.sampled_from(["echo", "", "_private", "a.b", "x" * 1000]) | VALUES,
    "params": st.lists(VALUES, max_size=3) | VALUES,
    "cid": st.sampled_from([0, 1, -1, 2 ** 64, 1.5, float("nan")]) | VALUES,
    "extra": VALUES,
})


def nested(depth_and_leaf):
    depth, opener = depth_and_leaf
    return opener * depth + b"\x01"


DEEP = st.tuples(st.integers(1, 5000), st.sampled_from([b"\x81", b"\xa1\x01", b"\xc1", b"\x9f"]))

#: A request whose head declares more than follows: byte and text strings,
#: arrays and maps of up to 2^64 - 1 bytes or items, in every length width.
_REQUEST_HEAD = b"\xa3" + b"".join(map(cbor2.dumps, ["lapps", 1, "method", "echo", "params"]))
DECLARED = st.builds(
    lambda major, width, length: _REQUEST_HEAD + bytes([major << 5 | 24 + width])
    + (length % 256 ** (1 << width)).to_bytes(1 << width, "big"),
    st.sampled_from([2, 3, 4, 5]), st.integers(0, 3), st.integers(2 ** 8, 2 ** 64 - 1))

_pings = itertools.count()


def check_decoding(ws, payload):
    """What the server answers a binary frame with: one reply, an error of
    the spec's shape for bad input, or lprobe's echo of the message it got
    classified; a ping sent after it is answered on the same connection."""
    ping = next(_pings)
    ws.send(payload)
    ws.send(cbor2.dumps({"lapps": 1, "method": "classify", "params": ["ping", ping]}))
    replies = []
    while (reply := cbor2.loads(ws.recv(timeout=20))) != {
            "cid": 0, "status": 1, "result": [4, "classify", ["ping", ping]]}:
        replies.append(reply)
    assert len(replies) == 1, replies
    reply, = replies
    assert messages.outbound_problem(reply) is None, reply
    assert reply["cid"] == 0
    if reply["status"] == 0:
        error = reply["error"]
        assert (error["code"], error["message"]) in ((messages.PARSE_ERROR, "Parse error"),
                                                     (messages.INVALID_REQUEST, "Invalid request"))
        assert isinstance(error["data"], str) and 0 < len(error["data"]) <= messages.MAX_DATA
    else:
        message = cbor2.loads(payload)
        assert reply["result"][0] == (1 if "cid" in message else 3) + (
            isinstance(message.get("params"), list) and len(message["params"]) > 0)


def shared_bomb(levels):
    """A request of a few bytes per level whose params, shared references
    expanded, hold 2^levels strings: level n + 1 is [level n, level n]."""
    items = [b"\xd8\x1c" + cbor2.dumps("x" * 100)]
    items += [b"\xd8\x1c\x82" + 2 * (b"\xd8\x1d" + cbor2.dumps(n)) for n in range(levels)]
    return _REQUEST_HEAD + b"\x98" + bytes([len(items)]) + b"".join(items)


@given(payload=st.binary(max_size=200) | st.builds(nested, DEEP) | DECLARED)
@example(payload=shared_bomb(60))
@example(payload=b"\x81" * 100_000 + b"\x01")
@example(payload=_REQUEST_HEAD + b"\x5b" + b"\xff" * 8)
@fuzz(200)
def test_decoder_on_random_bytes(served, lapps_ws, payload):
    check_decoding(lapps_ws, payload)
    served.example_done()


@given(value=LAPPS_MAPS | VALUES,
       edit=st.none() | st.tuples(st.integers(0, 300), st.binary(max_size=3)))
@example(value={"lapps": 1, "method": "echo", "params": [10 ** 5000]}, edit=None)  # found
@example(value={"lapps": 1, "method": "echo", "params": [-10 ** 4093]}, edit=None)  # found
@fuzz(150)
def test_decoder_on_cbor_values(served, lapps_ws, value, edit):
    """Whole CBOR items, and the same with a few bytes changed or cut."""
    payload = cbor2.dumps(value)
    if edit is not None:
        at, data = edit
        payload = payload[:at] + data + payload[at + len(data):] if data else payload[:at]
    check_decoding(lapps_ws, payload)
    served.example_done()


# ================================================================= the config loader

def schema_keys(node):
    """Every key an ``Object`` in the schema under ``node`` knows."""
    if isinstance(node, Object):
        for key, field in node.fields.items():
            yield key
            yield from schema_keys(field)
    for inner in ("inner", "item", "value"):  # Nullable, Array, MapOf
        if isinstance(getattr(node, inner, None), (Object, Nullable, Array, MapOf)):
            yield from schema_keys(getattr(node, inner))


SCHEMA_KEYS = sorted({"server", "directories", "services"}.union(
    *(schema_keys(node) for node in (configuration.SERVER, configuration.SERVICE,
                                     configuration.DIRECTORIES))))
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = st.recursive(JSON_LEAVES, lambda children: st.lists(children, max_size=3) | st.dictionaries(
    st.sampled_from(SCHEMA_KEYS) | st.text(max_size=8), children, max_size=3), max_leaves=12)


def guided(node):
    """Values for a schema node: mostly of its shape, with values at and
    just past its bounds; sometimes any JSON value at all."""
    if isinstance(node, Object):
        shaped = st.fixed_dictionaries(
            {}, optional={key: guided(field) for key, field in node.fields.items()})
    elif isinstance(node, Nullable):
        shaped = st.none() | guided(node.inner)
    elif isinstance(node, Array):
        shaped = st.lists(guided(node.item), max_size=3)
    elif isinstance(node, MapOf):
        shaped = st.dictionaries(st.text(max_size=8), guided(node.value), max_size=3)
    elif isinstance(node, Scalar):
        near = [v for v in (node.minimum, node.maximum, node.default)
                if isinstance(v, (int, float))]
        near += [v - 1 for v in near] + [v + 1 for v in near] + list(node.choices or ())
        if isinstance(node.default, str):
            near.append(node.default)
        typed = {int: st.integers(), float: st.floats(), bool: st.booleans(),
                 str: st.text(max_size=20)}[node.kind]
        return (st.sampled_from(near) | typed | JSON_LEAVES) if near else typed | JSON_LEAVES
    else:  # Anything
        return JSON
    return shaped | JSON


SERVICE_NAMES = st.sampled_from(sorted(p.name for p in APPS.iterdir())) | st.text(max_size=10)
GUIDED_SERVICE = guided(configuration.SERVICE)
CONFIGS = st.fixed_dictionaries({}, optional={
    "server": guided(configuration.SERVER),
    "directories": guided(configuration.DIRECTORIES),
    "services": st.dictionaries(SERVICE_NAMES, GUIDED_SERVICE, max_size=3) | JSON,
    "unknown": JSON,
})

#: RFC 6901: "/" alone, or tokens in which "~" only escapes "~" (~0) or "/" (~1).
_POINTER = r"/|(/([^/~]|~[01])*)+"


def assert_error_lines(error, *sources):
    """Only ConfigError escapes (the caller lets anything else fail the
    test); each of its lines is ``FILE: /pointer: message``, one line."""
    line = re.compile(rf"({'|'.join(map(re.escape, sources))}): ({_POINTER}): \S.*")
    assert error.lines
    for text in error.lines:
        assert "\n" not in text and "\r" not in text, text
        assert line.fullmatch(text), text


@given(data=CONFIGS | JSON)
@example({"services": {"echo": {"extra_headers": {"X-A": None}}}})  # found: TypeError
@example({"services": {"echo": {"preload": [[]]}}})                  # found: TypeError
@example({"services": {"echo": {"depends": [{}]}}})                  # found: TypeError
@example({"services": {"echo": {"allowed_origins": [5]}}})           # found: AttributeError
@example({"services": {"echo": {"settings": None}}})                 # found: TypeError
@example({"\r": None, "services": {"a\nb": {}}})                     # found: a line break
@fuzz(150)
def test_config_from_dict(data):
    try:
        configuration.from_dict(data, str(REPO), "fuzz.json", environ={})
    except configuration.ConfigError as e:
        assert_error_lines(e, "fuzz.json")


SHIPPED = sorted((REPO / "etc").glob("*.json"))


def containers(value):
    """Every object and array in a JSON document."""
    if isinstance(value, (dict, list)):
        yield value
        for item in (value.values() if isinstance(value, dict) else value):
            yield from containers(item)


@st.composite
def shipped_mutations(draw):
    """A shipped config with one to three values replaced, removed or added,
    in one file or split into LAppS's pair (``ws.json`` holding the server
    keys), and perhaps a few bytes of one file's text changed. Returns
    {file name: bytes}."""
    document = json.loads(draw(st.sampled_from(SHIPPED)).read_text())
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(list(containers(document))))
        op = draw(st.sampled_from(["set", "remove", "add"]))
        if isinstance(target, dict):
            keys = sorted(target)
            key = draw(st.sampled_from(keys)) if keys and op != "add" else \
                draw(st.sampled_from(SCHEMA_KEYS) | st.text(max_size=8))
            if op == "remove":
                target.pop(key, None)
            else:
                target[key] = draw(JSON | GUIDED_SERVICE)
        elif target and op != "add":
            i = draw(st.integers(0, len(target) - 1))
            if op == "remove":
                del target[i]
            else:
                target[i] = draw(JSON)
        else:
            target.append(draw(JSON))
    files = {"lapps.json": document}
    if draw(st.booleans()) and isinstance(document, dict) and "server" in document:
        files["ws.json"] = document.pop("server")
    texts = {name: json.dumps(value, indent=2).encode() for name, value in files.items()}
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(texts)))
        at, cut = draw(st.integers(0, 2000)), draw(st.integers(0, 4))
        texts[name] = texts[name][:at] + draw(st.binary(max_size=4)) + texts[name][at + cut:]
    return texts


@pytest.fixture(scope="module")
def etc(tmp_path_factory):
    """An etc/ beside a link to the shipped apps/, so that the shipped
    configs' relative paths resolve as they do in the repository."""
    root = tmp_path_factory.mktemp("config")
    (root / "apps").symlink_to(APPS)
    (root / "etc").mkdir()
    (root / "etc" / "ssl").symlink_to(REPO / "etc" / "ssl")  # made by lapps devcert, if at all
    return root / "etc"


@given(texts=shipped_mutations())
@example({"lapps.json": b"null"})                                # found: no error line
@example({"lapps.json": b'{"services": {}}', "ws.json": b"null"})  # found: no error line
@fuzz(100)
def test_config_load_of_mutated_shipped_files(etc, texts):
    for name in ("lapps.json", "ws.json"):
        if name in texts:
            (etc / name).write_bytes(texts[name])
        elif (etc / name).exists():
            (etc / name).unlink()
    path = str(etc / "lapps.json")
    try:
        configuration.load(path, environ={})
    except configuration.ConfigError as e:
        assert_error_lines(e, path, str(etc / "ws.json"))
