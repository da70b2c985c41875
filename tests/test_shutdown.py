"""Graceful stop on SIGTERM (``twistd -n lapps``): every client gets 1001 and
its onDisconnect, every reactive instance its onShutdown, standalone ones see
must_stop(), and the process exits within ``shutdown_timeout`` even when a
client never answers the close or a standalone thread is stuck in Lua."""

import asyncio
import signal
import struct
import time

import websockets

from conftest import TEST_APPS, reactive
from support.raw import raw_upgrade, received_until_dropped

CLIENTS = 5


def recorder(target, version="v1", **extra):
    return reactive(target, settings={"label": "recorder", "version": version}, **extra)


def ticker(instances):
    return {"standalone": True, "instances": instances, "preload": ["nap"]}


async def open_clients(server, path, count):
    clients = [await websockets.connect(server.url(path)) for _ in range(count)]
    for i, ws in enumerate(clients):
        await ws.send(f"hello {i}")
        assert await ws.recv() == f"hello {i}"
    return clients


async def sigterm_and_wait(server, clients, timeout, silent=None):
    """SIGTERM; the close code each client got, what the silent client (a
    raw socket) received, and the seconds the process took to exit."""
    async def closed(ws):
        await asyncio.wait_for(ws.wait_closed(), timeout)
        return ws.close_code

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    heard = asyncio.to_thread(received_until_dropped, silent) if silent else asyncio.sleep(0)
    codes, received = await asyncio.gather(asyncio.gather(*map(closed, clients)), heard)
    await asyncio.to_thread(server.process.wait, timeout + 5)
    return codes, received, time.monotonic() - started


def test_sigterm_closes_every_client_with_1001_and_stops_every_service(start_server):
    server = start_server({"recorder": recorder("/rec", instances=2), "ticker": ticker(2)},
                          server={"shutdown_timeout": 10}, applications=TEST_APPS)
    server.wait_for(r"ticker init", count=2)
    silent = raw_upgrade(server.port, "/rec")

    async def scenario():
        clients = await open_clients(server, "/rec", CLIENTS)
        return await sigterm_and_wait(server, clients, 10, silent)

    codes, received, elapsed = asyncio.run(scenario())
    assert server.stop() == -signal.SIGTERM  # twistd exits by the signal it got
    assert codes == [1001] * CLIENTS
    # the silent client got the close frame (1001) and, not answering, was dropped
    assert received == b"\x88\x16" + struct.pack("!H", 1001) + b"server shutting down"
    assert elapsed < 10
    assert server.count(r"recorder::onDisconnect v1 \d+") == CLIENTS + 1
    assert server.count(r"recorder::onShutdown v1") == 2
    assert server.count(r"ticker stopped \d+ after 1 nap") == 2
    last_disconnect = max(i for i, line in enumerate(server.lines) if "onDisconnect" in line)
    first_shutdown = min(i for i, line in enumerate(server.lines) if "onShutdown" in line)
    assert last_disconnect < first_shutdown
    assert server.count("stop_cut_short|stop cut short|Traceback|Unhandled") == 0


def test_a_standalone_stuck_in_lua_does_not_keep_the_process_alive(start_server):
    """The spinner's compiled loop cannot be stopped and its stop_timeout is
    a minute: the process still exits once shutdown_timeout has passed,
    after every client had its 1001 and onDisconnect and every reactive
    instance its onShutdown, and it says what it left behind."""
    shutdown_timeout = 3
    server = start_server({"recorder": recorder("/rec"),
                           "spinner": {"standalone": True, "stop_timeout": 60}},
                          server={"shutdown_timeout": shutdown_timeout}, applications=TEST_APPS)
    server.wait_for("spinner spinning")

    async def scenario():
        clients = await open_clients(server, "/rec", 2)
        return await sigterm_and_wait(server, clients, shutdown_timeout)

    codes, _, elapsed = asyncio.run(scenario())
    assert server.stop() == -signal.SIGTERM
    assert codes == [1001, 1001]
    assert elapsed < shutdown_timeout + 2  # the process was not held up by the spinner
    assert server.count(r"recorder::onDisconnect v1 \d+") == 2
    assert server.count(r"recorder::onShutdown v1") == 1
    server.wait_for(r"stop cut short after 3 s: 0 connections still open; "
                    r"services not stopped: spinner; threads left running: spinner\[0\]$",
                    timeout=0)
    assert server.count("Traceback|Unhandled") == 0
