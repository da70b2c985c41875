"""bcast checks against a running server with the ``lprobe`` service (three
instances): test_bcast.py runs them on the local bus, test_bus.py on the
shared buses (Redis, and the host bus of worker processes)."""

import asyncio

import cbor2
import websockets

from conftest import call, subscribe


def every_subscriber_gets_every_message_once_and_in_order(server):
    async def go():
        subscribers = await asyncio.gather(*[subscribe(server.url("/lprobe"), 77) for _ in range(100)])
        publisher = await websockets.connect(server.url("/lprobe"))
        await publisher.send(call("publish", 77, 20, "x" * 100))
        received = await asyncio.gather(*[
            asyncio.wait_for(_collect(ws, 20), 30) for ws in subscribers])
        # the publisher got its response, and nothing more arrives anywhere
        assert cbor2.loads(await publisher.recv())["result"] == [20]
        for ws in subscribers + [publisher]:
            await ws.send(call("classify"))
            assert cbor2.loads(await ws.recv())["cid"] == 0
            await ws.close()
        return received

    for messages in asyncio.run(go()):
        assert messages == [{"cid": 7, "message": [i, "x" * 100]} for i in range(1, 21)]


def a_subscriber_that_stops_reading_does_not_delay_the_others(server):
    """One subscriber never reads while 400 x 32 KiB (12.5 MiB) is broadcast;
    a reading subscriber still gets every message."""
    async def go():
        stalled = await subscribe(server.url("/lprobe"), 9)
        stalled.transport.pause_reading()
        reader = await subscribe(server.url("/lprobe"), 9)
        publisher = await websockets.connect(server.url("/lprobe"))
        await publisher.send(call("publish", 9, 400, "y" * 32768))
        got = await asyncio.wait_for(_collect(reader, 400), 60)
        await reader.close()
        await publisher.close()
        stalled.transport.abort()
        return [m["message"][0] for m in got]

    assert asyncio.run(go()) == list(range(1, 401))


async def _collect(ws, count):
    return [cbor2.loads(await ws.recv()) for _ in range(count)]
