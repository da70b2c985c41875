"""Backpressure (issue 6, item 3): what the server holds for clients that do
not read, and for instances that cannot keep up, stays bounded.

Each server runs as ``twistd`` with JSON log lines, so a test can find the
close code the server sent to a client that no longer reads anything."""

import asyncio
import base64
import hashlib
import re
import signal
import socket
import threading
from pathlib import Path

import cbor2
import pytest
import websockets

from conftest import call, reactive, subscribe
from lapps.bus.local import bcast
from support.jsonlog import events, wait_event
from support.outbound import (BLOB, assert_closed_at_cap, assert_echoes, flood_until_closed,
                              handler_of)
from support.pki import PKI, trusting

MiB = 1024 * 1024


def memory(server):
    """(VmRSS, VmHWM) of the server process, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return tuple(int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM"))


# --- outbound cap ---------------------------------------------------------------------------

def test_a_client_that_never_reads_a_200_mib_broadcast_costs_the_server_under_32_mib(json_server):
    """The acceptance test of the issue: one subscriber never reads while
    200 MiB is broadcast in 64 KiB messages; it is closed 1008 at its
    outbound cap, the server's memory grows by less than 32 MiB at its peak,
    and a subscriber that reads gets every message in order."""
    server = json_server({"blaster": reactive("/blaster", protocol="LAppS")})
    url = server.url("/blaster")
    batch, batches = 32, 100  # 2 MiB asked for at a time, under the cap of the reader

    async def go():
        stalled = await subscribe(url, 1)
        stalled.transport.pause_reading()
        reader = await subscribe(url, 1)
        stalled_handler = handler_of(server, stalled)
        rss_before, _ = memory(server)
        numbers = []
        for first in range(1, batch * batches + 1, batch):
            await reader.send(call("blast", 1, first, batch, BLOB))
            for _ in range(batch):
                message = cbor2.loads(await asyncio.wait_for(reader.recv(), 60))
                assert len(message["message"][1]) == BLOB
                numbers.append(message["message"][0])
            assert cbor2.loads(await reader.recv())["result"] == [batch]
        _, peak_after = memory(server)
        await reader.close()
        stalled.transport.abort()
        return stalled_handler, peak_after - rss_before, numbers

    stalled_handler, growth, numbers = asyncio.run(go())
    assert numbers == list(range(1, batch * batches + 1))
    assert growth < 32 * MiB, f"server memory grew by {growth / MiB:.1f} MiB"
    full = wait_event(server, "connection.outbound_full", handler=stalled_handler)
    assert full["limit"] == 4 * MiB and full["backlog"] + full["size"] > 4 * MiB
    closed = wait_event(server, "connection.close", handler=stalled_handler)
    assert closed["sent_code"] == 1008
    assert len(events(server, "connection.outbound_full")) == 1  # the reader never was


@pytest.mark.parametrize("scheme, limit", [("ws", 4 * MiB), ("wss", 256 * 1024)],
                         ids=["ws-default", "wss-256KiB"])
def test_an_echo_client_that_stops_reading_is_closed_1008_at_the_cap(json_server, tmp_path,
                                                                   scheme, limit):
    """Also over TLS, whose transport passes the TCP transport's pause on."""
    if scheme == "ws":
        server, ctx = json_server({"echo": reactive("/echo")}), None
    else:
        pki = PKI(tmp_path)
        server = json_server({"echo": reactive("/echo", max_outbound_buffer=limit)}, pki.server())
        ctx = trusting(pki.ca)
    stalled_handler = asyncio.run(flood_until_closed(
        server, server.url("/echo", scheme), ctx, b"e" * BLOB, check_every=16))
    # the echo's 64 KiB frame: payload and a 10-byte header
    assert_closed_at_cap(server, stalled_handler, limit, BLOB + 10)


def test_a_client_stalled_past_the_stall_timeout_is_closed_1008(json_server):
    """Under the cap, a full buffer that does not drain for
    ``outbound_stall_timeout`` seconds closes the connection too."""
    server = json_server({"echo": reactive("/echo", max_outbound_buffer=256 * MiB,
                                           outbound_stall_timeout=0.5)})

    async def go():
        other = await websockets.connect(server.url("/echo"))
        stalled = await websockets.connect(server.url("/echo"), max_size=None)
        stalled.transport.pause_reading()
        stalled_handler = handler_of(server, stalled)
        try:
            for _ in range(512):  # 32 MiB: more than the kernel buffers of both ends hold
                await stalled.send(b"s" * BLOB)
        except websockets.ConnectionClosed:
            pass  # already closed for the stall
        stalled_event = await asyncio.to_thread(
            wait_event, server, "connection.outbound_stalled", handler=stalled_handler)
        await assert_echoes(other, b"undisturbed")
        await other.close()
        return stalled_handler, stalled_event

    stalled_handler, stalled_event = asyncio.run(go())
    assert stalled_event["timeout"] == 0.5 and 0 < stalled_event["backlog"] < 32 * MiB
    assert wait_event(server, "connection.close", handler=stalled_handler)["sent_code"] == 1008
    assert events(server, "connection.outbound_full") == []


# --- inbound: reads pause while an instance's queue is over its cap --------------------------

GATED = {"gated": reactive("/gated", preload=["mqr"], max_instance_queue=10),
         "mqprobe": reactive("/mqprobe", preload=["mqr"])}


def test_reading_pauses_while_the_instance_queue_is_over_its_cap(json_server):
    """An instance suspended in an mqr recv queues what its client sends;
    past ``max_instance_queue`` the server stops reading from that client,
    so the queue stays near the cap while the client sends 2 MiB; once the
    instance is released, every message is answered, in order."""
    server = json_server(GATED)
    messages = [b"%04d" % i + b"m" * 1020 for i in range(2000)]

    async def go():
        flooder = await websockets.connect(server.url("/gated"), max_size=None)
        opener = await websockets.connect(server.url("/mqprobe"))
        flooder_handler = handler_of(server, flooder)
        await flooder.send("hold")
        # sent alongside: the server stops reading, so the client may have to wait
        flooding = asyncio.create_task(_send_all(flooder, messages))
        full = await asyncio.to_thread(wait_event, server, "instance.queue_full",
                                       handler=flooder_handler)
        await opener.send("echo q undisturbed")
        assert await opener.recv() == "q undisturbed"
        await opener.send("postraw gate go")
        assert await opener.recv() == "true nil"
        assert await flooder.recv() == "released go"
        echoed = [await asyncio.wait_for(flooder.recv(), 30) for _ in messages]
        await flooding
        await flooder.close()
        await opener.close()
        return flooder_handler, full, echoed

    flooder_handler, full, echoed = asyncio.run(go())
    assert echoed == messages
    assert full["limit"] == 10 and full["queued"] == 11 and full["service"] == "gated"
    drained = wait_event(server, "instance.queue_drained", service="gated")
    assert drained["handlers"] == [flooder_handler] and drained["queued"] <= 5
    # what one 64 KiB read of 1 KiB messages can hold past the cap, not 2000
    assert drained["peak"] <= 10 + 64
    assert len(events(server, "instance.queue_full")) == 1


async def _send_all(ws, messages):
    for message in messages:
        await ws.send(message)


def test_a_connection_paused_for_a_full_queue_still_closes(json_server):
    """The server stops while it is not reading from a client: the client is
    closed, its onDisconnect runs once, and the server exits."""
    server = json_server(GATED)

    async def go():
        flooder = await websockets.connect(server.url("/gated"))
        flooder_handler = handler_of(server, flooder)
        await flooder.send("hold")
        await _send_all(flooder, [b"x" * 100] * 50)
        await asyncio.to_thread(wait_event, server, "instance.queue_full",
                                handler=flooder_handler)
        return flooder_handler, await asyncio.to_thread(server.stop)

    flooder_handler, exit_code = asyncio.run(go())
    assert exit_code == -signal.SIGTERM  # twistd exits by the signal it got
    assert events(server, "server.stop_cut_short") == []
    assert server.count(rf"gated::onDisconnect {flooder_handler}$") == 1
    closed, = events(server, "connection.close")
    assert closed["handler"] == flooder_handler and closed["sent_code"] == 1001


# --- bcast and cws never buffer without bound -------------------------------------------------

def test_bcast_from_threads_stops_at_max_behind():
    """A standalone thread publishing faster than the reactor delivers is
    told so once MAX_BEHIND bytes wait for the reactor, and may publish
    again when the reactor has caught up. (The reactor here is not running,
    so nothing is delivered until the test lets it run one turn.)"""
    from twisted.internet.selectreactor import SelectReactor
    reactor = SelectReactor()
    channels = bcast.Broadcasts({}, reactor, 1 << 20)
    channels.create(3)
    payload = b"p" * BLOB
    results = []

    def publish(count):
        thread = threading.Thread(target=lambda: results.extend(
            channels.publish(3, payload) for _ in range(count)))
        thread.start()
        thread.join()

    fits = bcast.MAX_BEHIND // BLOB
    publish(fits + 2)
    assert results[:fits] == [True] * fits
    assert results[fits:] == [(False, b"bcast is behind: %d bytes of broadcasts are still "
                                      b"waiting for the reactor" % (fits * BLOB))] * 2
    reactor.runUntilCurrent()
    results.clear()
    publish(1)
    assert results == [True]


@pytest.fixture
def silent_remote():
    """A WebSocket server (a raw socket) that answers the opening handshake
    and then reads nothing until told to: (url, start_reading(byte_count))."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = {}

    def accept():
        conn, _ = listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.I).group(1)
        accept_key = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key + b"\r\n\r\n")
        accepted["conn"] = conn

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def start_reading(count):
        thread.join()
        conn, got = accepted["conn"], 0
        while got < count:
            got += len(conn.recv(1024 * 1024))

    yield f"ws://127.0.0.1:{listener.getsockname()[1]}/", start_reading
    listener.close()
    if "conn" in accepted:
        accepted["conn"].close()


def test_cws_send_says_the_buffer_is_full_instead_of_growing(json_server, silent_remote):
    """A Lua service sending through cws to a server that does not read gets
    false and "send buffer full" once 4 MiB waits to go out; once the
    remote server has read what was sent, a send works again."""
    server = json_server({"cwsflood": reactive("/cwsflood", preload=["cws"])})
    remote, start_reading = silent_remote

    async def go():
        async with websockets.connect(server.url("/cwsflood")) as ws:
            await ws.send("connect " + remote)
            assert await ws.recv() == "connected"
            while True:  # the upgrade ends after cws:new returns, as in LAppS
                await ws.send("opened")
                if await ws.recv() == "true":
                    break
            await ws.send("flood 1000 %d" % BLOB)
            flooded = await ws.recv()
            sent = int(flooded.split()[1].rstrip(":"))
            # each message went out as a masked frame: 14 bytes of header
            await asyncio.to_thread(start_reading, sent * (BLOB + 14))
            await ws.send("send")
            return flooded, sent, await ws.recv()

    flooded, sent, after = asyncio.run(go())
    # cws writes at once: the kernel's socket buffers (at most their
    # autotuning maxima) take what they can; once the transport holds a
    # message, the cap counts those after it and refuses the one that
    # would pass 4 MiB
    capped = 2 + (4 * MiB - BLOB) // (BLOB + 14)
    kernel = sum(int(Path(f"/proc/sys/net/ipv4/tcp_{side}").read_text().split()[2])
                 for side in ("wmem", "rmem"))
    assert capped <= sent <= capped + kernel // (BLOB + 14) + 1
    assert flooded == f"sent {sent}: send buffer full: the server is not taking what was sent"
    assert after == "true nil"
