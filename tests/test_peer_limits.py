"""Connection limits: the global cap (``workers.max_connections``, 403 at the
handshake) and the per-peer ones decided at accept (``limits``:
``peer_max_connections`` open at once, ``peer_connection_rate`` new ones per
second after a burst of ``peer_connection_burst``). A connection over a
per-peer limit is closed before a byte is read (no HTTP answer, no TLS
ServerHello), logged as ``limit.peer``, and every way a connection ends
gives its place back. Clients come from 127.0.0.1 and 127.0.0.2 (two peers
on the loopback)."""

import asyncio
import re
import socket
import struct

import websockets
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from conftest import TEST_APPS, reactive
from lapps.config import LIMITS
from lapps.services.peer_limits import PeerLimits
from support.peers import assert_echoes_from, url
from support.pki import PKI, trusting
from support.raw import (client_hello, parse_answer, raw_exchange, raw_upgrade, read_until_closed,
                         upgrade_request)

SERVICES = {"echo": reactive("/echo"), "probe": reactive("/probe")}


def limits(**values):
    """Limits for these tests, whose peers are loopback addresses: none exempt."""
    return {"limits": {"peer_exempt": [], **values}}


def peer(host="10.0.0.1"):
    return IPv4Address("TCP", host, 40000)


def refused_at_accept(server, source="127.0.0.1", path="/echo"):
    """Whether an upgrade request from ``source`` got not one byte back."""
    return raw_exchange(source, server.port, upgrade_request(path)) == b""


async def connect(server, source="127.0.0.1", path="/echo"):
    return await websockets.connect(url(server, path), local_addr=(source, 0), open_timeout=10)


async def says(ws, message):
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 10) == message


def refusals(server, source, count):
    """Wait for the ``count``-th ``limit.peer`` line about ``source``."""
    pattern = rf"\[lapps\.limits#warn\] tcp4:{re.escape(source)}:\d+ refused at accept: (.*) " \
              r"\((\d+) refused in a row\)"
    server.wait_for(pattern, count=count)
    return [m for m in map(re.compile(pattern).search, server.lines) if m]


# --- the accounting, on a clock of its own ---------------------------------------------

def test_token_bucket_admits_a_burst_then_the_rate():
    clock = Clock()
    limits = PeerLimits(dict(LIMITS.fill(), peer_connection_rate=2.0,
                             peer_connection_burst=3), clock)
    admitted = [limits.admits(peer()) for _ in range(4)]
    assert admitted == [True, True, True, False]
    assert limits.admits(peer("10.0.0.2"))  # its own bucket
    clock.advance(0.25)
    assert not limits.admits(peer())
    clock.advance(0.25)  # one token every 1/rate s
    assert limits.admits(peer()) and not limits.admits(peer())
    clock.advance(10)  # a full bucket holds the burst, no more
    assert [limits.admits(peer()) for _ in range(4)] == [True, True, True, False]


def test_concurrent_connections_are_counted_until_released():
    limits = PeerLimits(dict(LIMITS.fill(), peer_max_connections=2), Clock())
    assert limits.admits(peer()) and limits.admits(peer())
    assert not limits.admits(peer()) and limits.admits(peer("10.0.0.2"))
    limits.release("10.0.0.1")
    assert limits.admits(peer()) and not limits.admits(peer())


def test_configure_applies_to_the_next_decision():
    limits = PeerLimits(dict(LIMITS.fill(), peer_max_connections=1), Clock())
    assert limits.admits(peer()) and not limits.admits(peer())
    limits.configure(dict(LIMITS.fill(), peer_max_connections=2))
    assert limits.admits(peer()) and not limits.admits(peer())


def test_idle_peers_are_forgotten():
    clock = Clock()
    limits = PeerLimits(dict(LIMITS.fill(), peer_max_connections=1), clock)
    holder = peer("192.0.2.1")
    assert limits.admits(holder)  # and keeps its connection through every sweep
    for i in range(5000):  # each connects once and leaves
        address = peer(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        assert limits.admits(address)
        limits.release(address.host)
        clock.advance(0.01)  # a bucket is full again 1/rate = 0.01 s after its one use
    assert len(limits._peers) <= 1024
    assert not limits.admits(holder)  # still counted: a peer with a connection is kept
    limits.release(holder.host)
    assert limits.admits(holder)


# --- real sockets --------------------------------------------------------------------------

def test_the_host_itself_is_exempt_by_default(start_server):
    """LAppS's demo benchmarks the server from loopback with 3,200 sockets:
    ``peer_exempt`` leaves 127.0.0.0/8 uncounted, and only the addresses it
    names (127.0.0.2 here is counted)."""
    server = start_server(SERVICES, {"limits": {"peer_max_connections": 1,
                                                "peer_exempt": ["127.0.0.1"]}},
                          applications=TEST_APPS)

    async def go():
        held = [await connect(server) for _ in range(3)]
        counted = await connect(server, "127.0.0.2")
        assert refused_at_accept(server, "127.0.0.2")
        for ws in held + [counted]:
            await ws.close()

    asyncio.run(go())


def test_every_way_a_connection_ends_gives_its_place_back(start_server):
    server = start_server(SERVICES, limits(peer_max_connections=2, handshake_timeout=1.0),
                          applications=TEST_APPS)

    async def go():
        witness = await connect(server, "127.0.0.2")  # another peer, never limited here
        held = await connect(server)
        other = await connect(server)
        assert refused_at_accept(server)
        await other.close()  # like every end below, done once the server has closed

        # each way of ending uses the one free place: a leak fails the next step
        async with await connect(server) as ws:  # the client closes
            await says(ws, "bye")

        ws = await connect(server, path="/probe")  # the server closes
        await ws.send("close 1000")
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1000

        ws = await connect(server, path="/probe")  # a Lua error closes it
        await ws.send("boom")
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1011

        status, _, _ = parse_answer(raw_exchange("127.0.0.1", server.port,
                                                 upgrade_request("/nowhere")))
        assert status == 404  # refused in the handshake

        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            assert read_until_closed(sock) == b""  # the handshake timeout drops it

        sock = raw_upgrade(server.port, "/echo")  # the client resets an open connection
        port = sock.getsockname()[1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        await asyncio.to_thread(server.wait_for, rf":{port} on /echo \(handler \d+\) closed: "
                                                 "code 1006")

        async with await connect(server) as ws:  # the place is still there
            await says(ws, "last")
            assert refused_at_accept(server)  # and only the one
            await says(held, "held")
        await says(witness, "undisturbed")
        await witness.close()
        await held.close()

    asyncio.run(go())
    found = refusals(server, "127.0.0.1", 2)
    assert [m.group(1) for m in found] == ["2 connections open (peer_max_connections)"] * 2
    assert [m.group(2) for m in found] == ["1", "1"]  # two streaks: admitted in between


def test_new_connections_per_second_are_limited(start_server):
    server = start_server(SERVICES, limits(peer_connection_rate=0.2, peer_connection_burst=3),
                          applications=TEST_APPS)
    for _ in range(3):
        assert_echoes_from("127.0.0.1", url(server))
    for _ in range(5):
        assert refused_at_accept(server)
    assert_echoes_from("127.0.0.2", url(server))  # another peer
    found = refusals(server, "127.0.0.1", 3)
    assert found[0].group(1) == ("over 0.2 new connections per second after a burst of 3 "
                                 "(peer_connection_rate, peer_connection_burst)")
    server.stop()
    # refusals in a row are logged at the 1st, 2nd, 4th, ...
    assert [m.group(2) for m in refusals(server, "127.0.0.1", 3)] == ["1", "2", "4"]
    assert server.count(r"connected to /echo") == 4


def test_a_refused_tls_client_gets_no_server_hello(start_server, tmp_path):
    pki = PKI(tmp_path)
    server = start_server(SERVICES, {**pki.server(), **limits(peer_max_connections=1)},
                          applications=TEST_APPS)
    hello = client_hello()

    async def go():
        target = url(server, host="localhost", scheme="wss")
        async with websockets.connect(target, ssl=trusting(pki.ca),
                                      local_addr=("127.0.0.1", 0)) as held:
            assert raw_exchange("127.0.0.1", server.port, hello) == b""
            answer = raw_exchange("127.0.0.2", server.port, hello, enough=5)
            assert answer[:1] == b"\x16"  # a ServerHello for another peer
            await says(held, "still here")

    asyncio.run(go())
    refusals(server, "127.0.0.1", 1)


def test_global_cap_answers_403(start_server):
    server = start_server(SERVICES, {"workers": {"max_connections": 2}}, applications=TEST_APPS)

    async def go():
        first, second = await connect(server), await connect(server, "127.0.0.2")
        status, _, body = parse_answer(raw_exchange("127.0.0.2", server.port,
                                                    upgrade_request()))
        assert (status, body) == (403, b"the server is at its connection limit\n")
        await says(first, "one")
        await second.close()  # returns once the server has closed it
        async with await connect(server, "127.0.0.2") as ws:
            await says(ws, "two")
        await first.close()

    asyncio.run(go())
