"""permessage-deflate (RFC 7692) per service, opt-in with ``permessage_deflate``:
negotiated only where a service enables it, echo of compressible and
incompressible messages, and the inbound limit applied to the inflated message
(a deflate bomb is closed 1009 while the server goes on serving). The
``websockets`` client offers permessage-deflate by default."""

import asyncio
import os
import re

import pytest
import websockets

from conftest import TEST_APPS, reactive

LIMIT = 1024 * 1024
SERVICES = {"echo": reactive("/echo", instances=2, permessage_deflate=True,
                             max_inbound_message_size=LIMIT),
            "probe": reactive("/probe")}


@pytest.fixture
def server(start_server):
    return start_server(SERVICES, applications=TEST_APPS)


def extensions(ws):
    return ws.response.headers.get("Sec-WebSocket-Extensions")


async def echoes(ws, messages):
    for message in messages:
        await ws.send(message)
        assert await ws.recv() == message


def test_negotiated_only_where_the_service_enables_it(server):
    async def go():
        async with websockets.connect(server.url("/echo")) as on, \
                websockets.connect(server.url("/probe")) as off:
            assert extensions(on).startswith("permessage-deflate")
            assert extensions(off) is None
            await echoes(on, [b"on"])
            await off.send("who off")
            assert (await off.recv()).endswith(" off")

    asyncio.run(go())


def test_compressible_and_incompressible_messages_echo(server):
    """Text and binary; the server compresses what it sends: the compressible
    echo costs fewer wire bytes than its payload. (Autobahn counts a deflated
    frame's wire size against the limit too, and random bytes grow a little
    when deflated: the incompressible message stays under the limit.)"""
    compressible = [b"z" * LIMIT, "é€😀" * 1000, b"", "short"]
    incompressible = [os.urandom(LIMIT // 2), os.urandom(1)]

    async def go():
        async with websockets.connect(server.url("/echo"), max_size=None) as ws:
            await echoes(ws, compressible)
        async with websockets.connect(server.url("/echo"), max_size=None) as ws:
            await echoes(ws, incompressible)

    asyncio.run(go())
    closed = re.compile(r"on /echo \(handler \d+\) closed: .* (\d+) bytes out")
    squeezed, raw = sorted(int(server.wait_for(closed, count=n).group(1)) for n in (1, 2))
    assert squeezed < LIMIT // 100
    assert raw > LIMIT // 2


@pytest.mark.parametrize("frames", [1, 16], ids=["one frame", "fragmented"])
def test_deflate_bomb_is_closed_1009_and_the_server_goes_on(server, frames):
    """16 MiB of zeros deflate to ~16 KiB, well under the 1 MiB limit on the
    wire (the server's count of bytes in shows it came deflated); inflated
    they are 16 times over it."""
    bomb = [bytes(LIMIT)] * 16
    message = bomb[0] * 16 if frames == 1 else iter(bomb)

    async def go():
        async with websockets.connect(server.url("/echo"), max_size=None) as bystander:
            async with websockets.connect(server.url("/echo"), max_size=None) as ws:
                assert extensions(ws).startswith("permessage-deflate")
                await ws.send(message)
                with pytest.raises(websockets.ConnectionClosedError):
                    await ws.recv()
                assert ws.close_code == 1009
            await echoes(bystander, [b"still here"])
        async with websockets.connect(server.url("/echo"), max_size=None) as fresh:
            await echoes(fresh, [b"z" * LIMIT])

    asyncio.run(go())
    bomb_closed = server.wait_for(r"\(handler 2\) closed: code \d+, .* (\d+) bytes in")
    assert int(bomb_closed.group(1)) < 64 * 1024
