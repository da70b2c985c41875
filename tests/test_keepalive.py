"""Keepalive per service (``ping_interval``, ``ping_timeout``): the server
pings every connection of the service; a client that answers stays open as
long as it likes, one that does not is dropped after the timeout and its
``onDisconnect`` runs once; ``ping_interval`` 0 sends no ping at all."""

import asyncio
import re

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

from conftest import TEST_APPS, reactive
from support.raw import raw_upgrade, received_until_dropped

FAST = {"ping_interval": 0.2, "ping_timeout": 0.2}


def recorder(target, **extra):
    return reactive(target, settings={"label": "recorder", "version": "v1"}, **extra)


class CountingPings(ClientConnection):
    """A ``websockets`` client (which answers every ping) that counts them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pings = 0
        self.pinged = asyncio.Event()

    def process_event(self, event):
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings += 1
            self.pinged.set()
        super().process_event(event)

    async def wait_for_pings(self, count):
        while self.pings < count:
            self.pinged.clear()
            await asyncio.wait_for(self.pinged.wait(), 10)


async def connect(server, path):
    return await websockets.connect(server.url(path), create_connection=CountingPings,
                                    ping_interval=None)  # the client's own pings would count


async def says(ws, message):
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 10) == message


def ping_frames(data):
    """The payload sizes of the unmasked ping frames (0x89) at the start of
    ``data``, as a server sends them."""
    sizes = []
    while len(data) >= 2 and data[0] == 0x89:
        size = data[1]
        sizes.append(size)
        data = data[2 + size:]
    return sizes


def test_a_client_that_does_not_answer_is_dropped(start_server):
    server = start_server({"recorder": recorder("/rec", **FAST)}, applications=TEST_APPS)

    async def go():
        witness = await connect(server, "/rec")
        silent = raw_upgrade(server.port, "/rec")  # reads, but never answers a ping
        silent.settimeout(10)
        received = await asyncio.to_thread(received_until_dropped, silent)
        silent.close()
        assert len(ping_frames(received)) >= 1 and received[:1] == b"\x89"
        await says(witness, "still open")
        assert witness.pings >= 1  # pinged as well, and answering
        await witness.close()

    asyncio.run(go())
    found = server.wait_for(r"tcp4:127\.0\.0\.1:\d+ on /rec \(handler (\d+)\) did not answer "
                            r"a ping in 0\.2 s; dropped")
    handler = found.group(1)
    server.wait_for(rf"recorder::onDisconnect v1 {handler}$")
    server.wait_for(rf"\(handler {handler}\) closed: code 1006")
    server.stop()
    assert server.count(rf"recorder::onDisconnect v1 {handler}$") == 1
    assert server.count(r"did not answer a ping") == 1  # not the witness


def test_an_answering_client_stays_open_and_interval_zero_sends_no_ping(start_server):
    server = start_server({"recorder": recorder("/rec", **FAST),
                           "echo": reactive("/quiet", ping_interval=0)},
                          applications=TEST_APPS)

    async def go():
        quiet = await connect(server, "/quiet")
        pinged = await connect(server, "/rec")
        await pinged.wait_for_pings(5)  # several intervals and timeouts
        await says(pinged, "open after 5 pings")
        await says(quiet, "open too")
        assert quiet.pings == 0
        await pinged.close()
        await quiet.close()

    asyncio.run(go())
    server.stop()
    assert server.count(r"did not answer a ping") == 0
    assert [m.group(1) for m in map(re.compile(r"on /\w+ \(handler \d+\) closed: code (\d+)")
                                    .search, server.lines) if m] == ["1000", "1000"]
