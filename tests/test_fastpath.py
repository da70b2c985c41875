"""The fast path (lapps.fast.frames) gives the results Autobahn gives.

The same bytes, cut into reads in the same places, go to a protocol with
the fast path on and to one with it off (Autobahn's own path), each over
Twisted's test transport; the messages delivered, every byte written, the
close codes, the state and the traffic counters must be the same. Then the
real server: the Autobahn testsuite with the fast path on and off, and
backpressure and write order over real sockets while writes go out at once."""

import asyncio
import json
import subprocess
from unittest import mock

import pytest
import websockets
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from conftest import reactive
from lapps import config as configuration
from lapps.fast import frames as fastpath
from lapps.fast.transport import CoalescingClock
from support.conformance import CORE, assert_conformant, require_tool
from support.frames import CLOSE_ME, frame, opened, outcome, run, sized, stream_of
from support.jsonlog import events
from support.outbound import BLOB, assert_closed_at_cap, flood_until_closed
from support.pki import PKI, trusting

MiB = 1024 * 1024


def assert_same(stream, cuts=(), **options):
    fast, probe = run(True, stream, cuts, **options)
    slow, _ = run(False, stream, cuts, **options)
    assert fast == slow
    return fast, probe


# --- the same results, frame by frame --------------------------------------------------------

streams = stream_of(client=True)
options = st.fixed_dictionaries({"max_size": st.sampled_from([0, 100, 1000, 16 * MiB]),
                                 "fragment": st.sampled_from([0, 0, 100]),
                                 "utf8": st.sampled_from([True, True, False])})


#: The fast path's unmasking: websockets's C ``apply_mask`` where its
#: speedups are installed, and the big-integer XOR that replaces it elsewhere.
UNMASKERS = [fastpath.unmask_python] + ([fastpath.apply_mask] if fastpath.apply_mask else [])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams, options=options, unmask=st.sampled_from(UNMASKERS), data=st.data())
def test_fast_and_slow_paths_agree_on_random_frame_streams(stream, options, unmask, data):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    with mock.patch.object(fastpath, "unmask", unmask):
        assert_same(stream, cuts, **options)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4))
def test_every_unmasker_xors_the_payload_with_the_repeated_mask(payload, mask):
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert [unmask(payload, mask) for unmask in UNMASKERS] == [expected] * len(UNMASKERS)


def test_websockets_c_speedups_unmask_where_installed():
    """lapps depends on websockets, whose wheels carry the C ``apply_mask``:
    where it imports, the fast path uses it; else the big integers."""
    try:
        from websockets.speedups import apply_mask
    except ImportError:
        assert fastpath.unmask is fastpath.unmask_python
    else:
        assert fastpath.unmask is apply_mask


#: One of every kind, valid: short and 16-bit lengths, text with multi-byte
#: characters, empty, a fragmented message with a ping inside, a pong.
EVERY_KIND = b"".join([
    frame(2, b"hello"), frame(1, "grüße, 世界".encode() * 10), frame(2), frame(1, b""),
    frame(1, b"frag", fin=False), frame(9, b"p"), frame(0, "mented é".encode()),
    frame(10, b"unasked pong"), frame(2, sized(300), mask=b"\x00\x00\x00\x00"),
])
#: How each ends: normally, or at the first bad frame (after which the
#: rest is read in the closing state).
ENDINGS = {
    "close": frame(8, b"\x03\xe8"),
    "bad UTF-8": frame(1, "ok é".encode()[:-1]) + frame(2, b"after"),
    "RSV": frame(2, b"x", rsv=1) + frame(2, b"after"),
    "unmasked": frame(2, b"x", mask=None) + frame(2, b"after"),
    "wide 16-bit length": frame(2, b"x", wide=True) + frame(2, b"after"),
    "wide 64-bit length": frame(2, sized(200), wide=True) + frame(2, b"after"),
    "oversize": frame(2, sized(1001)) + frame(2, b"after"),
    "handler closes": frame(2, CLOSE_ME) + frame(2, b"after") + frame(8, b"\x03\xe8"),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_split_in_two_at_every_byte_boundary(ending):
    stream = EVERY_KIND + ENDINGS[ending]
    for cut in range(1, len(stream)):
        assert_same(stream, [cut], max_size=1000)


@pytest.mark.parametrize("ending", ENDINGS)
def test_one_byte_at_a_time(ending):
    stream = EVERY_KIND + ENDINGS[ending]
    assert_same(stream, range(1, len(stream)), max_size=1000)


def test_complete_frames_take_the_fast_path_and_the_rest_autobahns():
    """Not vacuous: whole data frames never reach Autobahn's frame
    callbacks. From a frame the fast path does not take, Autobahn reads the
    rest of that read; the next read is the fast path's again."""
    frames = [frame(op, sized(n)) for op, n in [(2, 5), (2, 200), (1, 100), (2, 70000)]]
    whole = b"".join(frames)
    assert run(True, whole, [])[1].slow_messages == 0
    assert run(False, whole, [])[1].slow_messages == 4
    fragmented = frame(2, b"a", fin=False) + frame(0, b"b")
    assert run(True, fragmented + whole, [])[1].slow_messages == 5
    assert run(True, fragmented + whole, [len(fragmented)])[1].slow_messages == 1
    # the second frame cut in two: Autobahn's until the end of the read that completes it
    first, second, third = (len(b"".join(frames[:i])) for i in (1, 2, 3))
    assert run(True, whole, [first + 10, third])[1].slow_messages == 2
    assert run(True, whole, [first + 10, second])[1].slow_messages == 1


def test_a_fast_data_frame_counts_as_an_answer_to_a_keepalive_ping():
    """Autobahn takes a data frame as a sign of life while a ping is
    pending (``autoPingRestartOnAnyTraffic``): the timeout is cancelled
    and the next ping scheduled, on either path."""
    after = []
    for fast in (True, False):
        probe, _ = opened(fast)
        probe.autoPingInterval = probe.autoPingTimeout = 30
        probe._sendAutoPing()  # what the keepalive timer does
        assert probe.autoPingTimeoutCall is not None and probe.autoPingPending
        probe.dataReceived(frame(2, b"alive"))
        after.append((probe.received, probe.slow_messages, probe.autoPingTimeoutCall,
                      probe.autoPingPending, probe.autoPingPendingCall is not None))
        probe.autoPingPendingCall.cancel()
    assert after == [([(b"alive", True)], 0, None, None, True),
                     ([(b"alive", True)], 1, None, None, True)]


def test_outbound_accounting_counts_the_fast_paths_writes_as_autobahns():
    """With the transport's buffer full, the echoes of both paths count
    against ``max_outbound_buffer`` alike, up to the same 1008."""
    outcomes = []
    for fast in (True, False):
        probe, transport = opened(fast)
        probe.handler = 1  # named in the log line
        probe.cap_outbound(limit=300)
        probe.pauseProducing()  # what a full transport does
        probe.dataReceived(b"".join(frame(2, sized(100)) for _ in range(5)))
        outcomes.append(outcome(probe, transport))
        assert probe.outbound_backlog == 2 * (100 + 2)  # the third would pass 300
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["sent close"] == (1008, b"outbound buffer full")


def test_the_switch_and_deflate_keep_connections_on_autobahns_path():
    assert opened(True)[0].fast_path_on and not opened(False)[0].fast_path_on
    probe, transport = opened(True, deflate=True)
    assert probe._perMessageCompress is not None and not probe.fast_path_on
    probe.dataReceived(frame(2, b"plain"))
    assert probe.slow_messages == 1 and probe.received == [(b"plain", True)]


# --- the real server --------------------------------------------------------------------------

@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path on", "fast path off"])
def test_core_autobahn_cases(start_server, tmp_path, fast_path):
    """The Lua echo without permessage-deflate, so that with the switch on
    every connection takes the fast path (test_autobahn.py runs these cases
    with deflate allowed, over ws and wss)."""
    require_tool()
    server = start_server({"echo": reactive("/echo", instances=4)}, {"fast_path": fast_path})
    assert_conformant(server.url("/echo"), tmp_path / "report", CORE, minimum=300)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_a_client_that_stops_reading_small_echoes_is_closed_1008_at_the_cap(
        json_server, tmp_path, scheme):
    """1 KiB messages, each read and echoed by the fast path and written at
    once until the socket is full: past it, what is queued counts against
    ``max_outbound_buffer`` as on Autobahn's path, and the other client
    is not disturbed."""
    limit, message = 64 * 1024, b"k" * 1024
    services = {"echo": reactive("/echo", max_outbound_buffer=limit)}
    server, ctx = _server(json_server, tmp_path, scheme, services)
    stalled_handler = asyncio.run(flood_until_closed(
        server, server.url("/echo", scheme), ctx, message, check_every=256))
    assert_closed_at_cap(server, stalled_handler, limit, len(message) + 4)  # a 16-bit length


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_echoes_queued_behind_a_full_socket_arrive_complete_and_in_order(
        json_server, tmp_path, scheme):
    """Writes go out at once only while nothing is queued: 16 MiB of echoes
    to a client that reads nothing until it has sent them all come out
    whole and in order once it reads."""
    services = {"echo": reactive("/echo", max_outbound_buffer=64 * MiB)}
    server, ctx = _server(json_server, tmp_path, scheme, services)
    sent = [b"%06d" % i + sized(BLOB - 6) for i in range(256)]

    async def go():
        async with websockets.connect(server.url("/echo", scheme), ssl=ctx,
                                      max_size=None, max_queue=None) as ws:
            ws.transport.pause_reading()
            for message in sent:
                await ws.send(message)
            ws.transport.resume_reading()
            return [await asyncio.wait_for(ws.recv(), 60) for _ in sent]

    assert asyncio.run(go()) == sent
    assert events(server, "connection.outbound_full") == []


def test_tls_flushes_of_one_turn_run_from_one_reactor_call_in_order():
    """CoalescingClock keeps what TLS asks of callLater(0): each call runs
    once on the next turn, in order; a cancelled one does not run, and one
    that fails is logged and stops none of the others."""
    reactor, ran, logged = Clock(), [], []
    clock = CoalescingClock(reactor)

    def fail():
        raise RuntimeError("a failing flush")

    calls = [clock.callLater(0, ran.append, "a"), clock.callLater(0, fail),
             clock.callLater(0, ran.append, "b"), clock.callLater(0, ran.append, "cancelled")]
    calls[3].cancel()
    later = clock.callLater(5, ran.append, "later")
    assert len(reactor.getDelayedCalls()) == 2 and ran == []  # one call for the turn, one timed
    globalLogPublisher.addObserver(logged.append)
    try:
        reactor.advance(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert ran == ["a", "b"] and not any(call.active() for call in calls)
    failure, = [e["log_failure"] for e in logged if "log_failure" in e]
    assert failure.check(RuntimeError)
    clock.callLater(0, ran.append, "c")
    reactor.advance(0)
    assert ran == ["a", "b", "c"] and later.active()
    reactor.advance(5)
    assert ran == ["a", "b", "c", "later"]


def test_fast_path_is_a_server_switch(tmp_path):
    path = tmp_path / "lapps.json"
    path.write_text(json.dumps({"server": {"fast_path": "yes"}, "services": {}}))
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.load(str(path))
    assert any("/server/fast_path" in line for line in refused.value.lines)


def _server(json_server, tmp_path, scheme, services):
    """A server with the fast path on (explicitly): (server, client SSL context)."""
    if scheme == "ws":
        return json_server(services, {"fast_path": True}), None
    pki = PKI(tmp_path)
    return json_server(services, pki.server(fast_path=True)), trusting(pki.ca)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "no_fast_path"])
def test_the_listen_queue_is_nginxs_not_twisteds(start_server, fast_path):
    """A burst of connections (LAppS's demo opens 3,200 from its own cws
    clients) waits in the listen queue rather than being dropped: 511, as
    nginx, not Twisted's 50. (``ss`` shows a listener's queue as Send-Q.)"""
    server = start_server({"echo": reactive("/echo")}, server={"fast_path": fast_path})
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True,
                               text=True, check=True).stdout.split()
    assert listening[0] == "LISTEN" and listening[2] == "511"
