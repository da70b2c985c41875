"""bcast history, recovery and presence on the local bus, over real
sockets (the checks are in support/history.py; test_bus.py runs them on
the host and Redis buses)."""

import asyncio
import signal

import pytest

from conftest import TEST_APPS, reactive, standalone
from support import history as checks

SERVICES = {"lhistory": reactive("/lhistory", protocol="LAppS", instances=2),
            "hticker": standalone(preload=["nap"])}
MAX_BYTES = 200_000


@pytest.fixture
def server(start_server):
    server = start_server(SERVICES, {"bus": {"history_max_bytes": MAX_BYTES}},
                          applications=TEST_APPS)
    server.wait_started(SERVICES)
    return server


def test_sends_are_numbered_and_plain_channels_unchanged(server):
    checks.sends_are_numbered_and_plain_channels_unchanged([server.url("/lhistory")])


def test_a_subscriber_recovers_what_it_missed_across_a_drop(server):
    checks.a_subscriber_recovers_what_it_missed_across_a_drop([server.url("/lhistory")], server)
    assert server.bad_lines() == []


def test_a_position_too_old_or_of_another_epoch_is_not_recovered(server):
    checks.a_position_too_old_or_of_another_epoch_is_not_recovered([server.url("/lhistory")])


def test_presence_counts_and_lists_every_subscription(server):
    checks.presence_counts_and_lists_every_subscription([server.url("/lhistory")])


def test_history_stays_bounded_under_a_flood(server):
    checks.history_stays_bounded_under_a_flood([server.url("/lhistory")], MAX_BYTES)


def test_bad_options_get_their_answer(server):
    checks.bad_options_get_their_answer([server.url("/lhistory")])
    assert server.bad_lines() == []


def test_a_restart_on_the_local_bus_changes_the_epoch(start_server):
    first = start_server(SERVICES, applications=TEST_APPS)
    first.wait_started(SERVICES)
    before = checks.epoch_of(first.url("/lhistory"))
    assert first.stop() == -signal.SIGTERM  # twistd exits by the signal it got
    second = start_server(SERVICES, applications=TEST_APPS)
    second.wait_started(SERVICES)
    assert checks.epoch_of(second.url("/lhistory")) != before


def test_a_history_too_big_for_the_instance_is_refused_and_it_goes_on(start_server):
    """6,000 held messages of 2 KiB do not fit in a 4 MiB Lua heap: history()
    says so (LuaJIT would abort the process on the allocation), and the
    instance answers the next call."""
    services = {"lhistory": reactive("/lhistory", protocol="LAppS", max_memory=4 * 1024 * 1024)}
    server = start_server(services, applications=TEST_APPS)
    server.wait_started(services)

    async def go():
        peer = await checks.Peer.connect(server.url("/lhistory"))
        assert await peer.ask("create", 77, 10000) == [True]
        for _ in range(3):
            assert (await peer.ask("publish", 77, 2000, "m" * 2048))[0] is True
        refused = await peer.ask("history", 77, 0, 10000)
        few = await peer.ask("history", 77, 5990, 5)
        await peer.close()
        return refused, few

    refused, few = asyncio.run(go())
    assert refused == [False, "bcast:history: 6000 messages do not fit in this instance's "
                              "max_memory; ask for fewer (limit)"]
    assert [m["offset"] for m in few[0]] == [5991, 5992, 5993, 5994, 5995]
    assert server.bad_lines() == []


def test_more_than_10000_missed_messages_are_not_recovered(start_server):
    """A subscribe sends at most 10,000 missed messages (``bcast:history``
    pages through more): further back is ``recovered = false``, on every bus."""
    server = start_server(SERVICES, applications=TEST_APPS)  # (history_max_bytes as shipped)
    server.wait_started(SERVICES)

    async def go():
        peer = await checks.Peer.connect(server.url("/lhistory"))
        assert await peer.ask("create", 78, 20000) == [True]
        for _ in range(6):
            assert (await peer.ask("publish", 78, 2000, "r"))[0] is True
        _, position = await peer.ask("history", 78, 0, 1)
        epoch = position["epoch"]
        too_far = await peer.ask("subscribe", 78, {"epoch": epoch, "offset": 1999})
        assert too_far == [True, {"recovered": False, "epoch": epoch, "offset": 12000}]
        assert await peer.ask("subscribe", 78, {"epoch": epoch, "offset": 2000}) == [
            True, {"recovered": True, "epoch": epoch, "offset": 12000}]
        await peer.until(lambda got: len(got) == 10000)
        await peer.close()
        return checks.offsets(peer.broadcasts)

    assert asyncio.run(go()) == list(range(2001, 12001))
