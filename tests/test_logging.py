"""Structured log events with stable names, as ``--logger lapps.logs.json_lines``
writes them: what an operator's log shipper keys on."""

import asyncio
import re

import pytest
import websockets

from conftest import TEST_APPS, TWISTD, Server, reactive, write_config
from support.jsonlog import events


@pytest.fixture
def json_server(tmp_path):  # (one server, in place of conftest's json_server(services))
    config = write_config(tmp_path, {"probe": reactive("/probe", instances=2)},
                          applications=TEST_APPS)
    server = Server(config, argv=TWISTD + ["-n", "--pidfile=", "--logger", "lapps.logs.json_lines",
                                           "lapps", "--config", str(config)],
                    listening=re.compile(r'"lapps_event": "listener\.up".*"host": "([^"]+)", '
                                         r'"port": (\d+)'),
                    ready=re.compile(r'"lapps_event": "server\.ready"'))
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_lifecycle_and_connection_events(json_server):
    async def go():
        async with websockets.connect(json_server.url("/probe")) as ws:
            await ws.send(b"x" * 100)
            await ws.recv()
        broken = await websockets.connect(json_server.url("/probe"))
        await broken.send("boom")
        with pytest.raises(websockets.ConnectionClosed):
            await broken.recv()

    asyncio.run(go())
    json_server.wait_for(r'"lapps_event": "connection\.close"', count=2)
    json_server.stop()
    by_name = {}
    for event in events(json_server):
        by_name.setdefault(event["lapps_event"], []).append(event)

    up, = by_name["listener.up"]
    assert up["host"] == "127.0.0.1" and up["port"] == json_server.port and up["tls"] is False
    assert sorted(e["instance"] for e in by_name["instance.start"]) == [0, 1]
    assert sorted(e["instance"] for e in by_name["instance.stop"]) == [0, 1]
    assert {e["service"] for e in by_name["instance.start"]} == {"probe"}

    opened = by_name["connection.open"]
    assert len(opened) == 2 and all(e["target"] == "/probe" for e in opened)
    clean, failed = sorted(by_name["connection.close"], key=lambda e: e["handler"])
    assert clean["code"] == 1000 and clean["target"] == "/probe"
    assert clean["peer"].startswith("tcp4:127.0.0.1:")
    assert clean["bytes_in"] > 100 and clean["bytes_out"] >= 100 and clean["duration"] >= 0
    assert failed["sent_code"] == 1011

    error, = by_name["lua.error"]
    assert error["service"] == "probe" and error["callback"] == "onMessage"
    assert error["instance"] in (0, 1) and error["handler"] == failed["handler"]
    assert "boom requested" in error["traceback"] and "stack traceback" in error["traceback"]
    assert by_name["listener.down"]


def test_refused_handshakes_are_logged(json_server):
    with pytest.raises(websockets.InvalidStatus):
        asyncio.run(websockets.connect(json_server.url("/nowhere")).__aenter__())
    json_server.wait_for(r'"lapps_event": "handshake\.refused"')
    refused, = [e for e in events(json_server) if e["lapps_event"] == "handshake.refused"]
    assert refused["code"] == 404 and refused["peer"].startswith("tcp4:127.0.0.1:")
