"""A blocking call in a reactive instance suspends only that instance."""

import asyncio
import time

import cbor2
import websockets

from conftest import TEST_APPS, reactive


def call(method, *params):
    return cbor2.dumps({"lapps": 1, "method": method, "params": list(params)})


def test_a_sleeping_instance_does_not_block_the_others(start_server):
    server = start_server({"lprobe": reactive("/lprobe", protocol="LAppS", instances=2,
                                              preload=["nap", "time"])},
                          applications=TEST_APPS)

    async def go():
        sleeper = await websockets.connect(server.url("/lprobe"))   # instance 0
        other = await websockets.connect(server.url("/lprobe"))     # instance 1
        await sleeper.send(call("sleep", 1))
        server.wait_for(r"lprobe::sleeping ")
        start = time.monotonic()
        await other.send(call("classify"))
        answer = cbor2.loads(await other.recv())
        elapsed = time.monotonic() - start
        slept = cbor2.loads(await sleeper.recv())
        await sleeper.close()
        await other.close()
        return answer, elapsed, slept

    answer, elapsed, slept = asyncio.run(go())
    assert answer["result"][0] == 3
    assert elapsed < 0.1, f"the other instance answered after {elapsed:.3f} s"
    assert slept["result"][0] == "slept" and slept["result"][1] >= 990


def test_later_events_of_a_sleeping_instance_wait_in_order(start_server):
    server = start_server({"lprobe": reactive("/lprobe", protocol="LAppS", instances=1,
                                              preload=["nap", "time"])},
                          applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/lprobe")) as a, \
                websockets.connect(server.url("/lprobe")) as b:
            await a.send(call("sleep", 0.3))
            server.wait_for(r"lprobe::sleeping ")  # the instance is now suspended
            await b.send(call("classify"))
            order = []

            async def note(ws, name):
                await ws.recv()
                order.append(name)

            await asyncio.gather(note(a, "sleeper"), note(b, "after"))
            return order

    assert asyncio.run(go()) == ["sleeper", "after"]
