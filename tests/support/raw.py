"""The opening handshake as bytes on a plain socket: requests written by
hand, the server's answers read until it closes and parsed, a TLS
ClientHello, and a client that completes the upgrade and then never reads.
For the tests of what the server does with clients that no WebSocket
library would be (limits, ACLs, origins, keepalive, shutdown, metrics)."""

import base64
import os
import socket
import ssl

import pytest


def read_until_closed(sock, enough=None):
    """Bytes the server sends until it closes (FIN or RST); with ``enough``,
    stop once that many have come."""
    received = b""
    try:
        while enough is None or len(received) < enough:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    return received


def raw_exchange(source, port, request, host="127.0.0.1", enough=None):
    """Connect from ``source``, send ``request``, return what comes back
    before the server closes (or ``enough`` bytes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((host, port))  # the kernel completes the TCP handshake
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # already closed by the server: nothing was sent to us
        return read_until_closed(sock, enough)


def upgrade_request(path="/echo"):
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def client_hello():
    """The bytes of a TLS ClientHello, made by Python's ssl in memory."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and hello[5] == 0x01  # handshake record, ClientHello
    return hello


def parse_answer(data):
    """(status, headers with lower-case names, body) of an HTTP answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status), {k.lower(): v for k, v in headers.items()}, body


def request_head(path="/echo", version="13", *extra):
    """An upgrade request's head, without the blank line that ends it."""
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             f"Sec-WebSocket-Version: {version}", *extra]
    return "".join(line + "\r\n" for line in lines).encode()


def raw_upgrade(port, path):
    """A client that completes the opening handshake and then never reads
    nor answers anything: the socket, with the 101 already read."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def received_until_dropped(sock):
    """What the server sent until it closed the connection (a reset, since
    it aborts a client that does not answer its close)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data
