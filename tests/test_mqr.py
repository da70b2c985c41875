"""mqr: named in-process queues between services, on a real server.

Competing standalone receivers, a bounded queue, copies, a reactive
receiver that suspends only its own instance, standalone <-> reactive
hand-offs, stop while receivers wait, and the shipped sender/receiver."""

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from conftest import APPS, REPO, TEST_APPS, reactive, write_config

COUNT = 100_000


def standalone(**extra):
    return {"standalone": True, "auto_start": True, "instances": 1, **extra}


def test_max_queue_is_checked(tmp_path):
    config = write_config(tmp_path, {}, {"mqr": {"max_queue": 0, "max_queue_bytes": 65535,
                                                 "size": 1}})
    result = subprocess.run([str(Path(sys.executable).parent / "lapps"), "check", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{config}: /server/mqr/size: unknown key",
                                          f"{config}: /server/mqr/max_queue: expected integer "
                                          f"from 1 to 10000000, got 0",
                                          f"{config}: /server/mqr/max_queue_bytes: expected "
                                          f"integer >= 65536, got 65535"]


def _bitmap(hex_words):
    """The numbers a receiver reported, as an int with bit n-1 set for n."""
    words = [int(hex_words[i:i + 8], 16) for i in range(0, len(hex_words), 8)]
    return sum(word << (32 * i) for i, word in enumerate(words))


def test_one_sender_two_receivers_move_100000_messages_none_lost_none_twice(start_server):
    settings = {"queue": "numbers", "count": COUNT, "receivers": 2}
    server = start_server({
        "mqcount_sender": standalone(preload=["mqr", "nap"], settings=settings),
        "mqcount_receiver": standalone(instances=2, preload=["mqr", "nap"], settings=settings,
                                       depends=["mqcount_sender"]),
    }, server={"mqr": {"max_queue": 100}},  # small: the sender meets "queue full" too
        applications=TEST_APPS)
    reports = [server.wait_for(r"mqcount got (\d+) count=(\d+) dups=(\d+) bad=(\d+) "
                               r"ordered=(\w+) bits=([0-9a-f]+)", timeout=25, count=n)
               for n in (1, 2)]
    sent = server.wait_for(r"mqcount sent (\d+) full=(\d+)")
    assert int(sent.group(1)) == COUNT
    assert server.stop() == -signal.SIGTERM  # twistd exits by the signal
    assert reports[0].group(1) != reports[1].group(1)  # two instances, one report each
    counts = [int(r.group(2)) for r in reports]
    for r in reports:
        assert (r.group(3), r.group(4), r.group(5)) == ("0", "0", "true"), r.group(0)[:200]
    assert all(counts), counts  # both receivers competed for the messages
    assert sum(counts) == COUNT
    first, second = (_bitmap(r.group(6)) for r in reports)
    assert first & second == 0                      # nothing delivered twice
    assert first | second == (1 << COUNT) - 1       # nothing lost
    assert [bin(b).count("1") for b in (first, second)] == counts
    assert server.count("Lua error") == 0


@pytest.fixture
def probe(start_server):
    return start_server({"mqprobe": reactive("/mq", instances=2, preload=["mqr"]),
                         "mqrelay": standalone(preload=["mqr"], stop_timeout=3)},
                        server={"mqr": {"max_queue": 50}}, applications=TEST_APPS)


async def _ask(ws, text):
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10)


def test_a_full_queue_refuses_and_loses_nothing(probe):
    async def go():
        async with websockets.connect(probe.url("/mq")) as ws:
            filled = await _ask(ws, "fill full 80")
            drained = await _ask(ws, "drain full")
            again = await _ask(ws, "fill full 10")
            rest = await _ask(ws, "drain full")
            empty = await _ask(ws, "try full")
            return filled, drained, again, rest, empty

    filled, drained, again, rest, empty = asyncio.run(go())
    assert filled == "ok=50 full=30 err=queue full"
    assert drained == ",".join(str(n) for n in range(1, 51))  # every one, in order
    assert again == "ok=10 full=0 err=nil"                      # room again once drained
    assert rest == ",".join(str(n) for n in range(1, 11))
    assert empty == "nil:nil nil"


#: A queue bound at 1 MiB, its count bound (100) out of reach of 64 KiB messages.
BYTES_BOUND = {"max_queue": 100, "max_queue_bytes": 1 << 20}


@pytest.fixture
def bytes_probe(start_server):
    return start_server({"mqprobe": reactive("/mq", preload=["mqr"])},
                        server={"mqr": BYTES_BOUND}, applications=TEST_APPS)


def test_a_queue_full_of_bytes_refuses_until_one_is_taken(bytes_probe):
    """15 messages of 64 KiB fit in 1 MiB (each counts a type byte too);
    taking one makes room for one more, taking all for 15 again."""
    async def go():
        async with websockets.connect(bytes_probe.url("/mq")) as ws:
            return [await _ask(ws, command) for command in (
                "fillraw big 65536", "drainraw big 1", "fillraw big 65536", "drainraw big",
                "fillraw big 65536")]

    filled, took, again, rest, refilled = asyncio.run(go())
    assert filled == "ok=15 err=queue full"
    assert took == "1"
    assert again == "ok=1 err=queue full"
    assert rest == ",".join(str(n) for n in [*range(2, 16), 1])  # nothing lost, in order
    assert refilled == filled


def test_values_are_copies(probe):
    """The sender changes what it posted (nested parts too) after posting;
    the receiver, in another instance, gets the values as posted, and its
    own changes are its own."""
    async def go():
        async with websockets.connect(probe.url("/mq")) as sender, \
                websockets.connect(probe.url("/mq")) as receiver:
            posted = await _ask(sender, "copy copies")
            got = [await _ask(receiver, "mutate copies") for _ in range(2)]
            return posted, got

    posted, got = asyncio.run(go())
    assert posted == 'posted {"list":[99,2,3],"name":"changed"}'  # the sender's own changed
    original = '{"list":[1,2,3],"name":"orig"}'
    assert got == [f'{original} {{"list":[1,2,3],"name":"mutated"}}'] * 2


def test_scalars_and_usage(probe):
    async def go():
        async with websockets.connect(probe.url("/mq")) as ws:
            posts = [await _ask(ws, command) for command in (
                "postraw plain some text", "postnum plain 42.5", "posttrue plain",
                'post plain "json text"', "post plain 42", "post plain null")]
            received = [await _ask(ws, "recv plain") for _ in posts]
            return posts, received, await _ask(ws, "binary plain"), await _ask(ws, "usage usage")

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


def test_recv_suspends_only_its_instance(probe):
    """Connections 1 and 3 are bound to instance A, connection 2 to B. A
    waits in recv; B answers meanwhile; A's later event waits its turn; a
    post from B resumes A."""
    async def go():
        url = probe.url("/mq")
        async with websockets.connect(url) as one, websockets.connect(url) as two, \
                websockets.connect(url) as three:
            await one.send("recv wake")
            await three.send("echo after")
            answered = await _ask(two, "echo meanwhile")
            assert await _ask(two, "echo again") == "again"
            posted = await _ask(two, 'post wake {"v":1}')
            woken = await asyncio.wait_for(one.recv(), 10)
            later = await asyncio.wait_for(three.recv(), 10)
            return answered, posted, woken, later

    answered, posted, woken, later = asyncio.run(go())
    assert answered == "meanwhile"
    assert posted == "true nil"
    assert woken == '{"v":1} nil'
    assert later == "after"


def test_a_recv_that_could_not_suspend_takes_nothing(probe):
    """recv in a coroutine of the service's own is a Lua error (1011); the
    waiter it left behind does not swallow the next message."""
    async def go():
        async with websockets.connect(probe.url("/mq")) as failing:
            await failing.send("cororecv orphan")
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await asyncio.wait_for(failing.recv(), 10)
            assert closed.value.rcvd.code == 1011
        async with websockets.connect(probe.url("/mq")) as ws:
            posted = [await _ask(ws, f'post orphan {{"x":{i}}}') for i in range(3)]
            got = [await _ask(ws, "recv orphan") for _ in range(3)]
            return posted, got

    posted, got = asyncio.run(go())
    assert posted == ["true nil"] * 3
    assert got == [f'{{"x":{i}}} nil' for i in range(3)]
    probe.wait_for("a blocking call cannot run here")


def test_a_message_too_big_for_the_receiver_is_dropped_not_fatal(start_server):
    """Rebuilding 3 MB in a 2 MiB Lua state would abort the process: the
    receiver gets nil and the reason, the drop is logged, all goes on."""
    server = start_server({"mqprobe": reactive("/mq", preload=["mqr"]),
                           "mqsmall": reactive("/small", preload=["mqr"], max_memory=2 << 20)},
                          applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/mq")) as big, \
                websockets.connect(server.url("/small")) as small:
            replies = [await _ask(big, "big q 3000000"), await _ask(small, "recv q"),
                       await _ask(big, 'post q {"after":1}'), await _ask(small, "recv q")]
            return replies

    posted, dropped, posted_after, got = asyncio.run(go())
    assert posted == posted_after == "true nil"
    assert re.fullmatch(r"nil:nil message of 30000\d\d bytes dropped: it does not fit in this "
                        r"instance's max_memory \(2097152\)", dropped)
    assert got == '{"after":1} nil'
    server.wait_for(r"mqr queue q: a message of 30000\d\d bytes does not fit in the receiving "
                    r"instance's max_memory \(2097152\); dropped")


def test_standalone_and_reactive_hand_values_to_each_other(probe):
    """A reactive post wakes the relay's thread (blocked in recv); the
    relay's post from its thread resumes the reactive recv."""
    async def go():
        url = probe.url("/mq")
        async with websockets.connect(url) as waiting, websockets.connect(url) as poster:
            results = []
            for i in range(20):
                await waiting.send("recv relay.out")
                assert await _ask(poster, f'post relay.in {{"i":{i}}}') == "true nil"
                results.append(await asyncio.wait_for(waiting.recv(), 10))
            return results

    assert asyncio.run(go()) == [f'{{"i":{i}}} nil' for i in range(20)]


def test_stop_ends_every_wait(probe):
    """At stop, a standalone thread blocked in recv gets nil at once and a
    suspended reactive recv gives up; a recv begun during stop (in
    onShutdown) does not wait either. (Each worker process runs the
    reactive instances; the standalone one runs in one.)"""
    async def go():
        ws = await websockets.connect(probe.url("/mq"))
        await ws.send("recv nothing")
        assert await _ask(await websockets.connect(probe.url("/mq")), "echo up") == "up"
        return ws

    asyncio.run(go())
    assert probe.stop() == -signal.SIGTERM
    assert probe.count(r"mqrelay recv gave nil: the server is stopping") == 1
    assert probe.count(r"mqrelay stopped \d+ after 0") == 1
    assert probe.count(r"mqprobe::onShutdown recv=nil the server is stopping") == 2 * probe.workers
    assert probe.count("did not stop") == 0
    assert probe.count("Lua error") == 0


def test_the_shipped_sender_and_receivers(start_server):
    shipped = json.loads((REPO / "etc" / "mqr.json").read_text())
    assert shipped["services"]["mqr_receiver"]["instances"] == 2
    assert shipped["services"]["mqr_sender"]["instances"] == 1
    server = start_server(shipped["services"], {**shipped["server"], "port": 0}, APPS)
    line = server.wait_for(r"Received (\d+) messages per (\d+)ms", timeout=10)
    assert int(line.group(1)) > 0 and int(line.group(2)) >= 1000
    assert server.stop() == -signal.SIGTERM
    stopped = re.findall(r"must stop\[(\d+)\]", "\n".join(server.lines))
    assert len(set(stopped)) == 2
    assert server.count("Lua error") == 0 and server.count("did not stop") == 0
