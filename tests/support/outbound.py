"""Clients that stop reading while the server writes to them, and what the
server's outbound cap (``max_outbound_buffer``) must then do: close that
client 1008, and it alone. For the backpressure and fast path tests."""

import asyncio

import pytest
import websockets

from support.jsonlog import events, wait_event


#: The size of the messages of a flood: 64 KiB, each a frame of its own.
BLOB = 64 * 1024


def handler_of(server, ws):
    """The handler id the server gave the client connection ``ws``."""
    port = ws.local_address[1]
    opened = wait_event(server, "connection.open", peer=f"tcp4:127.0.0.1:{port}")
    return opened["handler"]


async def assert_echoes(ws, message):
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 30) == message


async def flood_until_closed(server, url, ctx, message, check_every):
    """Send ``message`` to the echo at ``url`` from a client that reads
    nothing until the server closes it (aborts it, a second after its close
    frame), checking every ``check_every`` messages, and after, that
    another client is served; the stalled client's handler id."""
    other = await websockets.connect(url, ssl=ctx, max_size=None)
    stalled = await websockets.connect(url, ssl=ctx, max_size=None)
    stalled.transport.pause_reading()
    stalled_handler = handler_of(server, stalled)
    with pytest.raises(websockets.ConnectionClosed):
        for sent in range(1, 1_000_000):
            await stalled.send(message)
            if sent % check_every == 0:
                await assert_echoes(other, b"still here %d" % sent)
    await assert_echoes(other, b"after")
    await other.close()
    return stalled_handler


def assert_closed_at_cap(server, handler, limit, frame_size):
    """``handler``, and no other connection, was closed 1008 at the frame of
    ``frame_size`` bytes that would have taken its backlog past ``limit``."""
    full = wait_event(server, "connection.outbound_full", handler=handler)
    assert full["limit"] == limit and full["size"] == frame_size
    assert limit - frame_size < full["backlog"] <= limit
    assert wait_event(server, "connection.close", handler=handler)["sent_code"] == 1008
    assert len(events(server, "connection.outbound_full")) == 1
