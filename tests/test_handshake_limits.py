"""Limits on the opening handshake (``server.limits``): a request line over
``max_request_line`` is answered 414, a header line over ``max_header_line``
or a head over ``max_header_block`` 431, as soon as the bytes that cross the
limit arrive (before the head is complete); a client that does not complete
the handshake, TLS included, within ``handshake_timeout`` is dropped; a
``Sec-WebSocket-Version`` other than 13 is answered 426 naming 13. Every
answer is plain text, from raw sockets here, and the server goes on serving."""

import re
import socket
import ssl
import time

import pytest

from conftest import reactive
from support.peers import assert_echoes_from, url
from support.pki import PKI, trusting
from support.raw import client_hello, parse_answer, raw_exchange, read_until_closed, request_head

ECHO = {"echo": reactive("/echo")}
CLOSE = b"\x88\x80\x00\x00\x00\x00"  # a masked close frame, sent after a complete head
SMALL = {"limits": {"max_request_line": 256, "max_header_line": 300, "max_header_block": 1024}}


def answer(port, request):
    """The server's answer to the raw ``request`` bytes (read until it closes)."""
    return parse_answer(raw_exchange("127.0.0.1", port, request))


def assert_refused(server, request, status, reason):
    code, headers, body = answer(server.port, request)
    assert (code, body.decode()) == (status, reason + "\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    server.wait_for(rf"handshake from \S+ refused with {status}: " + re.escape(reason))


# --- what cannot be HTTP --------------------------------------------------------

@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("first_bytes, reason", [
    (client_hello(), "a TLS handshake on a port without TLS: use ws://, not wss://"),
    (b"\x00\x01binary junk", "not an HTTP request (first byte 0x00)"),
    (b" GET /echo HTTP/1.1\r\n", "not an HTTP request (first byte 0x20)"),
], ids=["tls-client-hello", "binary", "leading-space"])
def test_a_head_that_cannot_be_http_is_refused_at_its_first_byte(start_server, first_bytes,
                                                                 reason, fast_path):
    """As nginx answers 400 at once; held until a 60 s handshake_timeout,
    the answer would not come within the client's 10 s."""
    server = start_server(ECHO, {"limits": {"handshake_timeout": 60}, "fast_path": fast_path})
    assert_refused(server, first_bytes, 400, reason)
    assert_echoes_from("127.0.0.1", url(server))


def test_a_tls_client_on_the_plain_port_fails_at_once(start_server):
    """A real TLS client gets its handshake error when the 400 arrives, not
    a reset after handshake_timeout."""
    server = start_server(ECHO, {"limits": {"handshake_timeout": 60}})
    context = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(sock, server_hostname="localhost")
    server.wait_for(r"refused with 400: a TLS handshake on a port without TLS")


# --- sizes ------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, status, reason", [
    # not one of these heads is complete: the answer comes as the limit is crossed
    (b"GET /echo?" + b"q" * 8200, 414, "request line over 8192 bytes"),
    (request_head() + b"X-Long: " + b"a" * 8200, 431, "a header line over 8192 bytes"),
    (request_head() + b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * 600) for i in range(30)),
     431, "request head over 16384 bytes"),
], ids=["request-line", "header-line", "header-block"])
def test_oversize_heads_are_refused_before_they_end(start_server, request_bytes, status, reason):
    server = start_server(ECHO)
    assert b"\r\n\r\n" not in request_bytes
    assert_refused(server, request_bytes, status, reason)
    assert_echoes_from("127.0.0.1", url(server))


def test_limits_are_exact_and_configurable(start_server):
    server = start_server(ECHO, SMALL)
    target = "/echo?" + "q" * (256 - len("GET /echo? HTTP/1.1"))
    padding = "X-Pad: " + "p" * (300 - len("X-Pad: "))
    assert len(f"GET {target} HTTP/1.1") == 256 and len(padding) == 300
    # at each limit: served (the query string does not change the route)
    status, headers, _ = answer(server.port, request_head(target, "13", padding) + b"\r\n"
                                + CLOSE)
    assert status == 101 and headers["upgrade"].lower() == "websocket"
    # one byte over
    assert_refused(server, request_head(target + "q"), 414, "request line over 256 bytes")
    assert_refused(server, request_head("/echo", "13", padding + "p"), 431,
                   "a header line over 300 bytes")
    # the head: the blank line that ends it counts, the bytes after it do not
    fill = 1024 - len(request_head()) - 2  # for header lines of up to 300 bytes each
    fillers = [f"X-Fill-{i}: " + "f" * (250 - len(f"X-Fill-{i}: ") - 2) for i in range(fill // 250)]
    fillers.append("X-Rest: " + "r" * (fill - 250 * len(fillers) - len("X-Rest: ") - 2))
    full = request_head("/echo", "13", *fillers) + b"\r\n"
    assert len(full) == 1024
    status, _, _ = answer(server.port, full + CLOSE)
    assert status == 101
    fillers[-1] += "r"
    assert_refused(server, request_head("/echo", "13", *fillers) + b"\r\n", 431,
                   "request head over 1024 bytes")
    # a blank line before the request line does not end an empty head
    assert_refused(server, b"\r\n" + b"x" * 301, 431, "a header line over 300 bytes")
    assert_echoes_from("127.0.0.1", url(server))


def test_a_head_trickled_line_by_line_is_judged_as_a_whole(start_server):
    server = start_server(ECHO, SMALL)
    head = request_head()
    lines = [b"X-Line-%03d: %06d\r\n" % (i, i) for i in range(100)]
    assert {len(line) for line in lines} == {20}
    crossing = next(i for i in range(len(lines)) if len(head) + 20 * (i + 1) > 1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for line in lines[:crossing + 1]:  # up to the line that crosses the limit
            time.sleep(0.01)  # a read per line
            sock.sendall(line)
        status, _, body = parse_answer(read_until_closed(sock))
    assert (status, body) == (431, b"request head over 1024 bytes\n")
    assert_echoes_from("127.0.0.1", url(server))


# --- Sec-WebSocket-Version -----------------------------------------------------------

def test_other_versions_get_426_naming_13(start_server):
    server = start_server(ECHO)
    for version in ["8", "12", "14", "13.0", "abc", "13, 8", ""]:
        status, headers, body = answer(server.port, request_head("/echo", version) + b"\r\n")
        assert status == 426, version
        assert headers["sec-websocket-version"] == "13" and headers["upgrade"] == "websocket"
        assert body == f"WebSocket version {version!r} is not supported\n".encode()
    assert_echoes_from("127.0.0.1", url(server))
    # no version at all is a malformed request
    request = request_head().replace(b"Sec-WebSocket-Version: 13\r\n", b"") + b"\r\n"
    status, headers, _ = answer(server.port, request)
    assert status == 400 and "sec-websocket-version" not in headers


# --- time --------------------------------------------------------------------------

def test_a_slowloris_client_is_dropped_after_the_handshake_timeout(start_server):
    server = start_server(ECHO, {"limits": {"handshake_timeout": 1.0}})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sent, dropped = 0, False
        for byte in request_head():  # one byte every 50 ms: 9 s for the whole head
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            sent += 1
            time.sleep(0.05)
        assert dropped, "the server waited for the whole trickled head"
        assert read_until_closed(sock) == b""  # no answer: dropped
    assert 0 < sent < len(request_head())
    server.wait_for(r"did not complete the opening handshake in 1(\.0)? s; dropped")
    assert_echoes_from("127.0.0.1", url(server))


def test_a_tls_handshake_that_never_completes_is_dropped(start_server, tmp_path):
    pki = PKI(tmp_path)
    server = start_server(ECHO, {**pki.server(), "limits": {"handshake_timeout": 1.0}})
    hello = client_hello()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(hello[:len(hello) // 2])  # half a ClientHello, then silence
        assert read_until_closed(sock) == b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        assert read_until_closed(sock) == b""  # not one byte sent
    server.wait_for(r"did not complete the opening handshake in 1(\.0)? s; dropped", count=2)
    assert_echoes_from("127.0.0.1", url(server, host="localhost", scheme="wss"),
                       trusting(pki.ca))
