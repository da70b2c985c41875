"""The admin status page in Debian's Chromium (playwright-core from
tests/browser, as test_browser.py): it shows a service's connection count,
and what clients control (a request target, a Lua error's text) shows as
text, never as markup.

Service names cannot carry HTML (they must be Lua identifiers, checked by
lapps/config.py), so the HTML goes in a ``request_target`` (any text after a
"/") and in the message a client makes a Lua service raise."""

import contextlib

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from conftest import reactive
from support.admin import admin_port, admin_settings
from support.apps import ECHO, SHOUTY, write_apps
from support.node import node

TARGET = '/x<b id="from-target">bold</b>'
ERROR = ("<img id=\"from-error\" src=x onerror=\"document.title='pwned'\">"
         "<script>window.pwned=1</script>")


def read_page(url, timeout=90):
    """What Chromium shows at ``url`` (the JSON tests/browser/status_page.cjs prints)."""
    code, seen, output = node("status_page.cjs", url, timeout=timeout)
    assert code == 0, output
    return seen


def test_status_page_in_chromium(start_server, tmp_path):
    services = {"echo": reactive("/echo"), "shouty": reactive("/shouty"),
                "fancy": reactive(TARGET)}  # (no client can ask for that path: not URL-encoded)
    server = start_server(services, admin_settings(), write_apps(
        tmp_path / "apps", echo=ECHO, shouty=SHOUTY, fancy=ECHO.replace("echo", "fancy")))
    port = admin_port(server)
    # a client makes shouty raise its message: a Lua error (logged) closing it with 1011
    with connect(server.url("/shouty")) as ws:
        ws.send(ERROR)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 1011
    server.wait_for(r"Lua error in shouty\[0\]\.onMessage")

    with contextlib.ExitStack() as open_clients:
        for _ in range(3):  # each is open on the server once its echo is back
            ws = open_clients.enter_context(connect(server.url("/echo")))
            ws.send("x")
            assert ws.recv() == "x"
        seen = read_page(f"http://127.0.0.1:{port}/")

    assert seen["status"] == 200, seen
    assert seen["echo_connections"] == "3"
    assert seen["fancy_target"] == TARGET
    assert any(ERROR in text for text in seen["errors"]), seen["errors"]
    assert seen["injected"] == 0
    assert seen["title"] == "lapps status"
    assert seen["pwned"] is None
    assert seen["readiness"] == "ready"
    assert seen["console"] == []
