"""The shipped echo service over plain ws, with the websockets client."""

import asyncio

import pytest
import websockets

from conftest import reactive

SIZES = [0, 125, 126, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024]


def pattern(size):
    return bytes((i * 7 + 3) % 256 for i in range(256)) * (size // 256) + bytes(size % 256)


async def round_trip(url, message, **kwargs):
    async with websockets.connect(url, max_size=None, **kwargs) as ws:
        await ws.send(message)
        return await ws.recv()


@pytest.mark.parametrize("size", SIZES)
def test_binary_echo_is_byte_exact(echo_server, size):
    message = pattern(size)
    assert asyncio.run(round_trip(echo_server.url("/echo"), message)) == message


def text(size):
    """A str whose UTF-8 encoding is exactly ``size`` bytes, with 1- to 4-byte characters."""
    return "aé€😀" * (size // 10) + "x" * (size % 10)


@pytest.mark.parametrize("size", SIZES)
def test_text_echo(echo_server, size):
    message = text(size)
    assert len(message.encode()) == size
    reply = asyncio.run(round_trip(echo_server.url("/echo"), message))
    assert isinstance(reply, str) and reply == message


def test_query_string_is_not_part_of_the_match(echo_server):
    assert asyncio.run(round_trip(echo_server.url("/echo?x=1"), b"q")) == b"q"


def test_messages_over_the_limit_close_with_1009(start_server):
    server = start_server({"echo": reactive("/echo", max_inbound_message_size=1000)})

    async def go():
        async with websockets.connect(server.url("/echo"), max_size=None) as ws:
            await ws.send(b"x" * 1000)
            assert await ws.recv() == b"x" * 1000
            await ws.send(b"x" * 1001)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(go()) == 1009


def test_fragmented_message_over_the_limit_closes_with_1009(start_server):
    """The limit is on the whole message: 3 fragments of 400 bytes exceed 1000."""
    server = start_server({"echo": reactive("/echo", max_inbound_message_size=1000)})

    async def go():
        async with websockets.connect(server.url("/echo"), max_size=None) as ws:
            await ws.send(iter([b"a" * 400, b"b" * 400, b"c" * 400]))
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(go()) == 1009
