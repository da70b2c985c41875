"""mqr checks against a running server with the ``mqprobe`` service (and
``mqrelay``, a standalone one): test_mqr.py runs them on the local bus,
test_bus.py on the shared buses; and what the ``mqcount`` receivers report."""

import asyncio
import signal

import pytest
import websockets


def bitmap(hex_words):
    """The numbers a receiver reported, as an int with bit n-1 set for n."""
    words = [int(hex_words[i:i + 8], 16) for i in range(0, len(hex_words), 8)]
    return sum(word << (32 * i) for i, word in enumerate(words))


async def ask(ws, text):
    """Send ``text`` on ``ws``: the reply (within 10 s)."""
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10)


#: A queue bound at 1 MiB, its count bound (100) out of reach of 64 KiB messages.
BYTES_BOUND = {"max_queue": 100, "max_queue_bytes": 1 << 20}


def a_full_queue_refuses_and_loses_nothing(probe):
    async def go():
        async with websockets.connect(probe.url("/mq")) as ws:
            filled = await ask(ws, "fill full 80")
            drained = await ask(ws, "drain full")
            again = await ask(ws, "fill full 10")
            rest = await ask(ws, "drain full")
            empty = await ask(ws, "try full")
            return filled, drained, again, rest, empty

    filled, drained, again, rest, empty = asyncio.run(go())
    assert filled == "ok=50 full=30 err=queue full"
    assert drained == ",".join(str(n) for n in range(1, 51))  # every one, in order
    assert again == "ok=10 full=0 err=nil"                      # room again once drained
    assert rest == ",".join(str(n) for n in range(1, 11))
    assert empty == "nil:nil nil"


def a_queue_full_of_bytes_refuses_until_one_is_taken(bytes_probe):
    """15 messages of 64 KiB fit in 1 MiB (each counts a type byte too);
    taking one makes room for one more, taking all for 15 again."""
    async def go():
        async with websockets.connect(bytes_probe.url("/mq")) as ws:
            return [await ask(ws, command) for command in (
                "fillraw big 65536", "drainraw big 1", "fillraw big 65536", "drainraw big",
                "fillraw big 65536")]

    filled, took, again, rest, refilled = asyncio.run(go())
    assert filled == "ok=15 err=queue full"
    assert took == "1"
    assert again == "ok=1 err=queue full"
    assert rest == ",".join(str(n) for n in [*range(2, 16), 1])  # nothing lost, in order
    assert refilled == filled


def values_are_copies(probe):
    """The sender changes what it posted (nested parts too) after posting;
    the receiver, in another instance, gets the values as posted, and its
    own changes are its own."""
    async def go():
        async with websockets.connect(probe.url("/mq")) as sender, \
                websockets.connect(probe.url("/mq")) as receiver:
            posted = await ask(sender, "copy copies")
            got = [await ask(receiver, "mutate copies") for _ in range(2)]
            return posted, got

    posted, got = asyncio.run(go())
    assert posted == 'posted {"list":[99,2,3],"name":"changed"}'  # the sender's own changed
    original = '{"list":[1,2,3],"name":"orig"}'
    assert got == [f'{original} {{"list":[1,2,3],"name":"mutated"}}'] * 2


def scalars_and_usage(probe):
    async def go():
        async with websockets.connect(probe.url("/mq")) as ws:
            posts = [await ask(ws, command) for command in (
                "postraw plain some text", "postnum plain 42.5", "posttrue plain",
                'post plain "json text"', "post plain 42", "post plain null")]
            received = [await ask(ws, "recv plain") for _ in posts]
            return posts, received, await ask(ws, "binary plain"), await ask(ws, "usage usage")

    posts, received, binary, usage = asyncio.run(go())
    assert posts == ["true nil"] * 6
    # a Lua string, number or boolean travels as itself; an nljson value as nljson
    assert received == ["string:some text nil", "number:42.5 nil", "boolean:true nil",
                        '"json text" nil', "42 nil", "null nil"]
    assert binary == "true"
    create = "nil/usage: mqr.create(name), a non-empty string"
    post = ("false/usage: queue:post(value), an nljson value, a table, a string, a number "
            "or a boolean")
    lines = usage.split("\n")
    assert lines[:3] == [create] * 3
    assert lines[3:6] == [post] * 3
    assert lines[6] == "false/cannot post this value: a userdata that is not an nljson value"
    assert lines[7] == "true/nil"  # a function in a table becomes null, as in nljson
    assert lines[8:] == ["nil/usage: queue:recv() on a queue from mqr.create",
                         "nil/usage: queue:try_recv() on a queue from mqr.create",
                         "{\"f\":null}/nil"]


def recv_suspends_only_its_instance(probe):
    """Connections 1 and 3 are bound to instance A, connection 2 to B. A
    waits in recv; B answers meanwhile; A's later event waits its turn; a
    post from B resumes A."""
    async def go():
        url = probe.url("/mq")
        async with websockets.connect(url) as one, websockets.connect(url) as two, \
                websockets.connect(url) as three:
            await one.send("recv wake")
            await three.send("echo after")
            answered = await ask(two, "echo meanwhile")
            assert await ask(two, "echo again") == "again"
            posted = await ask(two, 'post wake {"v":1}')
            woken = await asyncio.wait_for(one.recv(), 10)
            later = await asyncio.wait_for(three.recv(), 10)
            return answered, posted, woken, later

    answered, posted, woken, later = asyncio.run(go())
    assert answered == "meanwhile"
    assert posted == "true nil"
    assert woken == '{"v":1} nil'
    assert later == "after"


def a_recv_that_could_not_suspend_takes_nothing(probe):
    """recv in a coroutine of the service's own is a Lua error (1011); the
    waiter it left behind does not swallow the next message."""
    async def go():
        async with websockets.connect(probe.url("/mq")) as failing:
            await failing.send("cororecv orphan")
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await asyncio.wait_for(failing.recv(), 10)
            assert closed.value.rcvd.code == 1011
        async with websockets.connect(probe.url("/mq")) as ws:
            posted = [await ask(ws, f'post orphan {{"x":{i}}}') for i in range(3)]
            got = [await ask(ws, "recv orphan") for _ in range(3)]
            return posted, got

    posted, got = asyncio.run(go())
    assert posted == ["true nil"] * 3
    assert got == [f'{{"x":{i}}} nil' for i in range(3)]
    probe.wait_for("a blocking call cannot run here")


def standalone_and_reactive_hand_values_to_each_other(probe):
    """A reactive post wakes the relay's thread (blocked in recv); the
    relay's post from its thread resumes the reactive recv."""
    async def go():
        url = probe.url("/mq")
        async with websockets.connect(url) as waiting, websockets.connect(url) as poster:
            results = []
            for i in range(20):
                await waiting.send("recv relay.out")
                assert await ask(poster, f'post relay.in {{"i":{i}}}') == "true nil"
                results.append(await asyncio.wait_for(waiting.recv(), 10))
            return results

    assert asyncio.run(go()) == [f'{{"i":{i}}} nil' for i in range(20)]


def stop_ends_every_wait(probe):
    """At stop, a standalone thread blocked in recv gets nil at once and a
    suspended reactive recv gives up; a recv begun during stop (in
    onShutdown) does not wait either. (Each worker process runs the
    reactive instances; the standalone one runs in one.)"""
    async def go():
        ws = await websockets.connect(probe.url("/mq"))
        await ws.send("recv nothing")
        assert await ask(await websockets.connect(probe.url("/mq")), "echo up") == "up"
        return ws

    asyncio.run(go())
    assert probe.stop() == -signal.SIGTERM
    assert probe.count(r"mqrelay recv gave nil: the server is stopping") == 1
    assert probe.count(r"mqrelay stopped \d+ after 0") == 1
    assert probe.count(r"mqprobe::onShutdown recv=nil the server is stopping") == 2 * probe.workers
    assert probe.count("did not stop") == 0
    assert probe.count("Lua error") == 0
