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

from conftest import APPS, REPO, TEST_APPS, reactive, standalone, write_config
from support import mqr as mqr_checks
from support.mqr import BYTES_BOUND, ask, bitmap

COUNT = 100_000


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
    first, second = (bitmap(r.group(6)) for r in reports)
    assert first & second == 0                      # nothing delivered twice
    assert first | second == (1 << COUNT) - 1       # nothing lost
    assert [bin(b).count("1") for b in (first, second)] == counts
    assert server.count("Lua error") == 0


@pytest.fixture
def probe(start_server):
    return start_server({"mqprobe": reactive("/mq", instances=2, preload=["mqr"]),
                         "mqrelay": standalone(preload=["mqr"], stop_timeout=3)},
                        server={"mqr": {"max_queue": 50}}, applications=TEST_APPS)


def test_a_full_queue_refuses_and_loses_nothing(probe):
    mqr_checks.a_full_queue_refuses_and_loses_nothing(probe)


@pytest.fixture
def bytes_probe(start_server):
    return start_server({"mqprobe": reactive("/mq", preload=["mqr"])},
                        server={"mqr": BYTES_BOUND}, applications=TEST_APPS)


def test_a_queue_full_of_bytes_refuses_until_one_is_taken(bytes_probe):
    mqr_checks.a_queue_full_of_bytes_refuses_until_one_is_taken(bytes_probe)


def test_values_are_copies(probe):
    mqr_checks.values_are_copies(probe)


def test_scalars_and_usage(probe):
    mqr_checks.scalars_and_usage(probe)


def test_recv_suspends_only_its_instance(probe):
    mqr_checks.recv_suspends_only_its_instance(probe)


def test_a_recv_that_could_not_suspend_takes_nothing(probe):
    mqr_checks.a_recv_that_could_not_suspend_takes_nothing(probe)


def test_a_message_too_big_for_the_receiver_is_dropped_not_fatal(start_server):
    """Rebuilding 3 MB in a 2 MiB Lua state would abort the process: the
    receiver gets nil and the reason, the drop is logged, all goes on."""
    server = start_server({"mqprobe": reactive("/mq", preload=["mqr"]),
                           "mqsmall": reactive("/small", preload=["mqr"], max_memory=2 << 20)},
                          applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/mq")) as big, \
                websockets.connect(server.url("/small")) as small:
            replies = [await ask(big, "big q 3000000"), await ask(small, "recv q"),
                       await ask(big, 'post q {"after":1}'), await ask(small, "recv q")]
            return replies

    posted, dropped, posted_after, got = asyncio.run(go())
    assert posted == posted_after == "true nil"
    assert re.fullmatch(r"nil:nil message of 30000\d\d bytes dropped: it does not fit in this "
                        r"instance's max_memory \(2097152\)", dropped)
    assert got == '{"after":1} nil'
    server.wait_for(r"mqr queue q: a message of 30000\d\d bytes does not fit in the receiving "
                    r"instance's max_memory \(2097152\); dropped")


def test_standalone_and_reactive_hand_values_to_each_other(probe):
    mqr_checks.standalone_and_reactive_hand_values_to_each_other(probe)


def test_stop_ends_every_wait(probe):
    mqr_checks.stop_ends_every_wait(probe)


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
