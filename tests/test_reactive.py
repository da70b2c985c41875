"""Reactive raw services: routing, affinity, ordering, the ws module,
onDisconnect exactly once however a connection ends, and Lua errors that
close only their own connection."""

import asyncio
import signal
import socket

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from conftest import TEST_APPS, reactive


@pytest.fixture
def probe(start_server):
    return start_server({"probe": reactive("/probe", instances=2)}, applications=TEST_APPS)


async def ask(ws, text):
    await ws.send(text)
    return await ws.recv()


def run(coro):
    return asyncio.run(coro)


def test_two_services_on_two_targets(start_server):
    server = start_server({"echo": reactive("/echo"), "probe": reactive("/probe")},
                          applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/echo")) as echo, \
                websockets.connect(server.url("/probe")) as probe:
            return await ask(echo, "who"), (await ask(probe, "who")).split()[1:3]

    echoed, (count, _) = run(go())
    assert echoed == "who" and count == "1"


def test_connections_are_bound_round_robin_and_keep_their_instance(probe):
    async def go():
        connections = [await websockets.connect(probe.url("/probe")) for _ in range(4)]
        try:
            tags = []
            for ws in connections:
                replies = [(await ask(ws, "who")).split()[0] for _ in range(5)]
                assert len(set(replies)) == 1, "a connection moved between instances"
                tags.append(replies[0])
            return tags
        finally:
            for ws in connections:
                await ws.close()

    tags = run(go())
    assert tags[0] == tags[2] and tags[1] == tags[3] and tags[0] != tags[1]


def test_an_instance_handles_its_events_in_order(probe):
    """200 pipelined messages come back in order, and the instance's own
    message counter rises by one each time."""
    async def go():
        async with websockets.connect(probe.url("/probe")) as ws:
            for i in range(200):
                await ws.send(f"who {i}")
            return [(await ws.recv()).split() for _ in range(200)]

    replies = run(go())
    assert [int(r[3]) for r in replies] == list(range(200))
    counts = [int(r[1]) for r in replies]
    assert counts == list(range(counts[0], counts[0] + 200))


def test_handler_ids_are_unique_integers(probe):
    async def go():
        handlers = []
        for _ in range(6):
            async with websockets.connect(probe.url("/probe")) as ws:
                handlers.append((await ask(ws, "who")).split()[2])
        return handlers

    handlers = run(go())
    assert len(set(handlers)) == 6 and all(h.isdigit() for h in handlers)


def test_lua_sees_no_python_bridge(probe):
    async def go():
        async with websockets.connect(probe.url("/probe")) as ws:
            return await ask(ws, "python"), await ask(ws, "pyreach")

    assert run(go()) == ("nil function", "require=false")


def test_yielding_the_dispatcher_is_a_lua_error_not_a_lost_event(probe):
    """A service that yields the coroutine lapps runs it in gets an error
    (1011); its onDisconnect still comes, and the instance goes on."""
    async def go():
        ws = await websockets.connect(probe.url("/probe"))
        handler = (await ask(ws, "who")).split()[2]
        await ws.send("yield")
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        async with websockets.connect(probe.url("/probe")) as other:
            assert await ask(other, "again") == "again"
        return handler, ws.close_code

    handler, code = run(go())
    assert code == 1011
    probe.wait_for(r"coroutine.yield outside a coroutine of the service's own")
    probe.wait_for(rf"probe::onDisconnect {handler} ")


def test_running_out_of_lua_memory_closes_only_that_connection(start_server):
    server = start_server({"hog": reactive("/hog", max_memory=16 * 1024 * 1024,
                                           max_inbound_message_size=32 * 1024 * 1024)},
                          applications=TEST_APPS)

    async def go():
        codes = []
        for message in ["grow", "grow", b"y" * (20 * 1024 * 1024)]:
            ws = await websockets.connect(server.url("/hog"), max_size=None)
            await ws.send(message)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            codes.append(ws.close_code)
        async with websockets.connect(server.url("/hog")) as ws:
            codes.append(await ask(ws, "still here"))
        return codes

    assert run(go()) == [1011, 1011, 1009, "still here"]
    assert server.process.poll() is None
    server.wait_for(r"not enough memory")
    server.wait_for(r"has no memory for a message of 20971520 bytes")


def test_ondisconnect_once_after_a_clean_close(probe):
    async def go():
        async with websockets.connect(probe.url("/probe")) as ws:
            return (await ask(ws, "who")).split()[2]

    handler = run(go())
    line = probe.wait_for(rf"probe::onDisconnect {handler} (\S+) (.*)")
    assert line.group(1) == "false", "ws:send to a closed handler must fail"
    assert line.group(2) == "no open connection with this handler"
    settle(probe)
    assert probe.count(rf"probe::onDisconnect {handler} ") == 1


def settle(probe):
    """Open and close one connection per instance and wait for their
    onDisconnect: any event still due to an earlier connection (a second
    onDisconnect) has run by then, since each instance keeps its order."""
    async def cycle():
        async with websockets.connect(probe.url("/probe")) as ws:
            return (await ask(ws, "who")).split()[2]

    for handler in [run(cycle()) for _ in range(2)]:
        probe.wait_for(rf"probe::onDisconnect {handler} ")


def test_ondisconnect_once_after_a_tcp_reset(probe):
    async def go():
        ws = await websockets.connect(probe.url("/probe"))
        handler = (await ask(ws, "who")).split()[2]
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        ws.transport.abort()
        return handler

    handler = run(go())
    probe.wait_for(rf"probe::onDisconnect {handler} ")
    settle(probe)
    assert probe.count(rf"probe::onDisconnect {handler} ") == 1


def test_ondisconnect_once_at_server_stop(probe):
    async def go():
        ws = await websockets.connect(probe.url("/probe"))
        handler = (await ask(ws, "who")).split()[2]
        probe.process.terminate()
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        return handler, ws.close_code

    handler, code = run(go())
    assert probe.stop() == -signal.SIGTERM  # twistd exits by the signal it got
    assert code == 1001
    assert probe.count(rf"probe::onDisconnect {handler} ") == 1
    shutdowns = probe.count(r"probe::onShutdown ")
    assert shutdowns == 2
    disconnect_at = next(i for i, l in enumerate(probe.lines) if "probe::onDisconnect" in l)
    shutdown_at = next(i for i, l in enumerate(probe.lines) if "probe::onShutdown" in l)
    assert disconnect_at < shutdown_at


@pytest.mark.parametrize("command", ["boom", "nothing"])
def test_a_lua_error_closes_that_connection_with_1011_only(probe, command):
    async def go():
        async with websockets.connect(probe.url("/probe")) as bystander:
            ws = await websockets.connect(probe.url("/probe"))
            await ws.send(command)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert await ask(bystander, "still") == "still"
        async with websockets.connect(probe.url("/probe")) as later:
            assert await ask(later, "next") == "next"
        return ws.close_code

    assert run(go()) == 1011
    error = probe.wait_for(r"Lua error in probe\[(\d)\]\.onMessage")
    if command == "boom":
        probe.wait_for(r"boom requested")
        probe.wait_for(r"stack traceback")
    else:
        probe.wait_for(r"onMessage returned nil instead of true")
    assert error.group(1) in ("0", "1")


def test_ws_close_with_a_valid_code(probe):
    async def go():
        async with websockets.connect(probe.url("/probe")) as ws:
            await ws.send("close 4001")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    assert run(go()) == (4001, "bye")


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 2999, 5000])
def test_ws_close_refuses_codes_rfc6455_forbids(probe, code):
    async def go():
        async with websockets.connect(probe.url("/probe")) as ws:
            return await ask(ws, f"close {code}")

    assert run(go()) == "refused: close code must be 1000-1003, 1007-1013 or 3000-4999"


def test_ws_send_rejects_a_bad_opcode_and_invalid_utf8(probe):
    async def go():
        async with websockets.connect(probe.url("/probe")) as ws:
            return await ask(ws, "badopcode"), await ask(ws, "badutf")

    assert run(go()) == ("false opcode must be 1 (text) or 2 (binary)",
                         "false a text message must be valid UTF-8")


async def raw_request(port, request: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await reader.readuntil(b"\r\n\r\n")
    if not response.startswith(b"HTTP/1.1 101 "):
        response += await reader.read()  # the body, up to the server's close
    writer.close()
    return response.decode("latin-1")


def upgrade_request(path, extra=""):
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def test_plain_get_of_an_unknown_target_is_404(probe):
    response = run(raw_request(probe.port, b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n"))
    assert response.startswith("HTTP/1.1 404 Not Found\r\n")


def test_only_websocket_version_13_is_accepted(probe):
    response = run(raw_request(probe.port, upgrade_request("/probe").replace(
        b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")))
    assert response.startswith("HTTP/1.1 426 Upgrade Required\r\n")
    assert "\r\nSec-WebSocket-Version: 13\r\n" in response


def test_unknown_target_is_404_before_any_upgrade(probe):
    response = run(raw_request(probe.port, upgrade_request("/nowhere")))
    assert response.startswith("HTTP/1.1 404 Not Found\r\n")
    assert "\r\nServer: lapps\r\n" in response and "<html" not in response.lower()
    with pytest.raises(InvalidStatus) as refused:
        run(websockets.connect(probe.url("/nowhere")).__aenter__())
    assert refused.value.response.status_code == 404


def test_plain_get_without_upgrade_is_426(probe):
    response = run(raw_request(probe.port, b"GET /probe HTTP/1.1\r\nHost: localhost\r\n\r\n"))
    assert response.startswith("HTTP/1.1 426 Upgrade Required\r\n")
    assert "\r\nUpgrade: websocket\r\n" in response and "<html" not in response.lower()


def test_other_bad_requests_are_400(probe):
    response = run(raw_request(probe.port, upgrade_request("/probe").replace(
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")))
    assert response.startswith("HTTP/1.1 400 Bad Request\r\n")


def test_server_header_has_no_version(probe):
    response = run(raw_request(probe.port, upgrade_request("/probe")))
    assert response.startswith("HTTP/1.1 101 ")
    assert "\r\nServer: lapps\r\n" in response


def test_extra_headers_are_sent_in_the_101(start_server):
    server = start_server({"probe": reactive("/probe", extra_headers={"X-Served-By": "lapps-test"})},
                          applications=TEST_APPS)
    response = run(raw_request(server.port, upgrade_request("/probe")))
    assert "\r\nX-Served-By: lapps-test\r\n" in response


@pytest.mark.parametrize("offered, alias, expected", [
    (None, None, None),
    (["raw"], None, "raw"),
    (["chat", "raw"], None, "raw"),
    (["chat"], None, None),
    (["fast"], "fast", "fast"),
    (["raw"], "fast", None),
    (None, "fast", None),
])
def test_subprotocol_is_answered_only_if_offered(start_server, offered, alias, expected):
    extra = {"proto_alias": alias} if alias else {}
    server = start_server({"probe": reactive("/probe", **extra)}, applications=TEST_APPS)
    header = f"Sec-WebSocket-Protocol: {', '.join(offered)}\r\n" if offered else ""
    response = run(raw_request(server.port, upgrade_request("/probe", header)))
    assert response.startswith("HTTP/1.1 101 ")
    answered = [l.split(":", 1)[1].strip() for l in response.split("\r\n")
                if l.lower().startswith("sec-websocket-protocol:")]
    assert answered == ([expected] if expected else [])


def test_a_service_whose_onstart_fails_answers_503(start_server):
    server = start_server({"nostart": reactive("/nostart")}, applications=TEST_APPS)
    server.wait_for(r"Lua error in nostart\[0\]\.onStart")
    response = run(raw_request(server.port, upgrade_request("/nostart")))
    assert response.startswith("HTTP/1.1 503 ")


def test_connections_over_the_limit_get_403(start_server):
    """LAppS's limit: workers × max_connections connections, then 403."""
    server = start_server({"probe": reactive("/probe")}, applications=TEST_APPS,
                          server={"workers": {"workers": 1, "max_connections": 2}})

    async def go():
        first = await websockets.connect(server.url("/probe"))
        second = await websockets.connect(server.url("/probe"))
        refused = await raw_request(server.port, upgrade_request("/probe"))
        await first.close()
        server.wait_for(r"probe::onDisconnect ")
        third = await websockets.connect(server.url("/probe"))
        reply = await ask(third, "again")
        await second.close()
        await third.close()
        return refused, reply

    refused, reply = run(go())
    assert refused.startswith("HTTP/1.1 403 Forbidden\r\n")
    assert reply == "again"
