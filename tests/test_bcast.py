"""bcast: process-wide channels over real sockets."""

import asyncio
import threading

import cbor2
import pytest
import websockets

from conftest import TEST_APPS, call, reactive, subscribe
from support import bcast as bcast_checks


@pytest.fixture
def server(start_server):
    # the 12.5 MiB burst of a_subscriber_that_stops_reading_does_not_delay_the_others
    # (support/bcast.py) is written in one reactor turn: over the default
    # max_outbound_buffer even for a subscriber that reads
    return start_server({"lprobe": reactive("/lprobe", protocol="LAppS", instances=3,
                                            max_outbound_buffer=16 * 1024 * 1024)},
                        applications=TEST_APPS)


def test_every_subscriber_gets_every_message_once_and_in_order(server):
    bcast_checks.every_subscriber_gets_every_message_once_and_in_order(server)


def test_a_disconnected_subscriber_leaves_the_channel(server):
    async def go():
        leaving = await subscribe(server.url("/lprobe"), 5)
        staying = await subscribe(server.url("/lprobe"), 5)
        await leaving.close()
        server.wait_for(r"lprobe::onDisconnect ")
        await staying.send(call("publish", 5, 1, "after"))
        first = cbor2.loads(await staying.recv())
        await staying.close()
        return first

    # the publish still reaches the one left, and the server logged no error
    assert asyncio.run(go()) == {"cid": 7, "message": [1, "after"]}
    assert server.count("Lua error") == 0 and server.count("Unhandled") == 0


def test_a_subscriber_that_stops_reading_does_not_delay_the_others(server):
    bcast_checks.a_subscriber_that_stops_reading_does_not_delay_the_others(server)


def test_subscribing_to_a_missing_channel_is_false_and_a_message(start_server):
    server = start_server({"lprobe": reactive("/lprobe", protocol="LAppS")}, applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/lprobe")) as ws:
            await ws.send(call("subscribe_missing", 424242))
            return cbor2.loads(await ws.recv())

    assert asyncio.run(go())["result"] == [False, "Broadcast with id 424242 is not found"]
    assert server.count("Lua error") == 0


def test_dropping_a_handler_leaves_every_channel():
    """What the server does when a connection closes (the socket tests above
    cannot see membership, only deliveries)."""
    from twisted.internet import reactor
    from lapps.bus.local.bcast import Broadcasts
    channels = Broadcasts({7: object(), 8: object()}, reactor, 1 << 20)
    for channel in (1, 2, 3):
        channels.create(channel)
        assert channels.subscribe(channel, 7) is True
    channels.subscribe(2, 8)
    channels.drop(7)
    assert [channels.subscribers(c) for c in (1, 2, 3)] == [frozenset(), {8}, frozenset()]


class _Subscriber:
    """An open connection as bcast sees it, keeping the frames written to it."""

    STATE_OPEN = state = 3

    def __init__(self):
        self.frames = []

    def sendPreparedMessage(self, frame):
        self.frames.append(frame.payloadHybi)


def _from_a_thread(f, *args):
    """``f(*args)`` called from a thread that is not the reactor's (a standalone's)."""
    results = []
    thread = threading.Thread(target=lambda: results.append(f(*args)))
    thread.start()
    thread.join()
    return results[0]


def test_a_broadcast_bigger_than_max_behind_goes_when_none_waits():
    """A standalone thread's broadcast larger than MAX_BEHIND is taken when
    nothing waits for the reactor, rather than refused forever; while it
    waits, the next is refused; once delivered, publishing works again.
    (The reactor here is not running: the test lets it run one turn.)"""
    from twisted.internet.selectreactor import SelectReactor
    from lapps.bus.local.bcast import MAX_BEHIND, Broadcasts
    reactor = SelectReactor()
    subscriber = _Subscriber()
    channels = Broadcasts({1: subscriber}, reactor, 1 << 20)
    channels.create(3)
    assert channels.subscribe(3, 1) is True
    big = b"b" * (MAX_BEHIND + 1)
    assert _from_a_thread(channels.publish, 3, big) is True
    assert _from_a_thread(channels.publish, 3, b"s") == (
        False, b"bcast is behind: %d bytes of broadcasts are still waiting for the reactor"
        % len(big))
    reactor.runUntilCurrent()
    assert _from_a_thread(channels.publish, 3, b"s") is True
    reactor.runUntilCurrent()
    assert len(subscriber.frames) == 2
    assert subscriber.frames[0].endswith(big) and subscriber.frames[1].endswith(b"s")
