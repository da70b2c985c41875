"""Origin allow-list per service (``allowed_origins``): a request whose
Origin header, normalised (``scheme://host:port``, lower case, default port
written out), is not listed is refused 403 before the upgrade; a service
with a list refuses a request without an Origin header; ``"null"`` admits
pages with an opaque origin (files, sandboxes); a service without a list
takes any origin."""

import asyncio

import pytest
import websockets

from conftest import reactive
from support.apps import echo_apps
from support.raw import parse_answer, raw_exchange, upgrade_request

ALLOWED = ["https://Example.com", "http://localhost:8080", "null"]
SERVICES = {"echo": reactive("/echo", allowed_origins=ALLOWED),
            "open": reactive("/open")}


def status(server, path, origin=None):
    """The status of an upgrade request with this Origin header (or none)."""
    request = upgrade_request(path)
    if origin is not None:
        request = request.replace(b"\r\n\r\n", f"\r\nOrigin: {origin}\r\n\r\n".encode())
    code, _, body = parse_answer(raw_exchange("127.0.0.1", server.port, request))
    return code, body.decode()


def echoes(server, path, origin=None):
    async def go():
        async with websockets.connect(server.url(path), origin=origin, open_timeout=10) as ws:
            await ws.send("hello")
            return await asyncio.wait_for(ws.recv(), 10)
    return asyncio.run(go()) == "hello"


@pytest.fixture
def server(start_server, tmp_path):
    return start_server(SERVICES, applications=echo_apps(tmp_path, SERVICES))


def test_listed_origins_are_admitted_and_others_refused_403(server):
    for origin in ["https://example.com", "https://EXAMPLE.com:443", "https://example.com/",
                   "http://localhost:8080", "HTTP://LocalHost:8080", "null", "file://"]:
        assert echoes(server, "/echo", origin), origin
    for origin in ["https://example.com:8443", "http://example.com", "https://www.example.com",
                   "http://localhost", "https://evil.example", "https://example.com.evil.example",
                   "NULL", "https://example.com/path"]:
        assert status(server, "/echo", origin) == \
            (403, f"service echo does not admit origin {origin}\n"), origin
    assert echoes(server, "/echo", "https://example.com")  # still serving
    server.wait_for(r"handshake from tcp4:127\.0\.0\.1:\d+ refused with 403: service echo "
                    r"does not admit origin https://evil\.example$")


def test_a_request_without_origin_is_refused_by_a_list(server):
    assert status(server, "/echo") == \
        (403, "service echo does not admit requests without an Origin header\n")
    assert echoes(server, "/echo", "null")


def test_a_service_without_a_list_admits_any_origin(server):
    assert echoes(server, "/open") and echoes(server, "/open", "https://evil.example")
    assert echoes(server, "/open", "null")
