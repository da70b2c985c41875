"""The access log: one ``connection.close`` event per WebSocket connection,
with everything an operator asks of it (peer, target, service,
subprotocol, TLS version, close codes, duration, bytes in and out), as the
JSON lines of ``--logger lapps.logs.json_lines``.

Connections that never open (refused, timed out or failed before the 101)
have no ``connection.close``: they are ``handshake.refused`` or
``handshake.timeout`` events and the ``lapps_handshakes_total`` metric."""

import asyncio
import re
import socket

import pytest
import websockets

from conftest import TEST_APPS, TWISTD, Server, reactive, write_config
from support.jsonlog import events
from support.pki import PKI, trusting

FIELDS = {"peer", "target", "service", "handler", "subprotocol", "tls", "code", "sent_code",
          "clean", "duration", "bytes_in", "bytes_out"}


def json_server(tmp_path, server_keys=None):
    config = write_config(tmp_path, {"probe": reactive("/probe")}, server_keys,
                          applications=TEST_APPS)
    return Server(config, argv=TWISTD + ["-n", "--pidfile=", "--logger", "lapps.logs.json_lines",
                                         "lapps", "--config", str(config)],
                  listening=re.compile(r'"lapps_event": "listener\.up".*"host": "([^"]+)", '
                                       r'"port": (\d+)'),
                  ready=re.compile(r'"lapps_event": "server\.ready"'))


def closes(server):
    return sorted((e for e in events(server) if e["lapps_event"] == "connection.close"),
                  key=lambda e: e["handler"])


def test_close_events_over_ws_have_every_field_once_per_connection(tmp_path):
    server = json_server(tmp_path)

    async def clients():
        async with websockets.connect(server.url("/probe"), subprotocols=["raw"]) as ws:
            assert ws.subprotocol == "raw"
            await ws.send(b"who " + b"x" * 100)
            await ws.recv()
        broken = await websockets.connect(server.url("/probe"))
        await broken.send("boom")
        with pytest.raises(websockets.ConnectionClosed):
            await broken.recv()
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.url("/nowhere"))

    try:
        asyncio.run(clients())
        with socket.create_connection(("127.0.0.1", server.port)):
            pass  # gone before a handshake
        server.wait_for(r'"lapps_event": "connection\.close"', count=2)
    finally:
        server.stop()
    clean, failed = closes(server)  # exactly two, after the server has stopped
    for event in (clean, failed):
        assert FIELDS <= event.keys()
        assert event["peer"].startswith("tcp4:127.0.0.1:")
        assert event["target"] == "/probe" and event["service"] == "probe"
        assert event["tls"] is None and event["duration"] >= 0
    assert (clean["subprotocol"], clean["code"], clean["sent_code"], clean["clean"]) == \
        ("raw", 1000, 1000, True)
    assert clean["bytes_in"] >= 6 + 104 and clean["bytes_out"] >= 2 + 4
    assert (failed["subprotocol"], failed["sent_code"]) == (None, 1011)
    opened = [e["handler"] for e in events(server) if e["lapps_event"] == "connection.open"]
    assert sorted(opened) == [clean["handler"], failed["handler"]]


def test_close_event_over_wss_names_the_tls_version(tmp_path):
    pki = PKI(tmp_path)
    server = json_server(tmp_path, pki.server())

    async def client():
        url = f"wss://localhost:{server.port}/probe"
        async with websockets.connect(url, ssl=trusting(pki.ca), subprotocols=["raw"]) as ws:
            await ws.send(b"who")
            await ws.recv()
            return ws.transport.get_extra_info("ssl_object").version()

    try:
        version = asyncio.run(client())
        server.wait_for(r'"lapps_event": "connection\.close"')
    finally:
        server.stop()
    event, = closes(server)
    assert FIELDS <= event.keys()
    assert event["tls"] == version == "TLSv1.3"
    assert (event["subprotocol"], event["service"], event["code"]) == ("raw", "probe", 1000)
    assert event["bytes_in"] > 0 and event["bytes_out"] > 0


def test_access_log_off_logs_no_connection_and_serves_as_before(tmp_path):
    """``"access_log": false`` (nginx's ``access_log off``): no open or
    close line for a connection, which is served and counted as before."""
    server = json_server(tmp_path, {"access_log": False})

    async def client():
        async with websockets.connect(server.url("/probe")) as ws:
            await ws.send(b"who")
            return await ws.recv()

    try:
        assert asyncio.run(client())
    finally:
        server.stop()
    names = {e["lapps_event"] for e in events(server)}
    assert "connection.open" not in names and "connection.close" not in names
    assert "server.ready" in names
    assert server.bad_lines() == []
