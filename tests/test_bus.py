"""The shared buses: bcast and mqr across processes, proved by the same
tests on both. On ``redis``, separate ``twistd -n lapps`` processes (the
"hosts") share one real redis-server; on ``host``, the worker processes of
one ``twistd -n lapps`` share their supervisor's host bus. Then what only
Redis has: Redis unreachable at start, stopped while running and back, and
the bus section of the config."""

import asyncio
import os
import re
import signal
import time
import uuid

import cbor2
import pytest
import websockets

from lapps.bus.redis.mqr import PREFETCH as REDIS_PREFETCH
from conftest import (TEST_APPS, Server, Supervised, lapps_check, reactive, run_twistd, standalone,
                      write_config)
from redis_server import RedisServer, free_port
from support import bcast as bcast_checks, history as history_checks, mqr as mqr_checks
from support.mqr import BYTES_BOUND, bitmap

COUNT = 100_000
BACKENDS = ["redis", "host"]


@pytest.fixture
def hosts(tmp_path, reap):
    """``host(name, services, redis_url, ready=patterns, bus=keys, **server_keys)``
    → a running Server on the Redis bus (prefix unique to the test; ``bus``
    adds keys to its bus section), once it logged each of ``ready``; all are
    killed after the test."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def host(name, services, url, ready=(), bus=None, **server):
        directory = tmp_path / name
        directory.mkdir()
        bus = {"backend": "redis", "url": url, "prefix": prefix, "consumer_timeout": 2,
               **(bus or {})}
        server = reap(Server(write_config(directory, services, {"bus": bus, **server},
                                          TEST_APPS)))
        server.wait_for("bus available")
        for pattern in ready:  # e.g. every instance started
            server.wait_for(pattern)
        return server

    return host


@pytest.fixture(params=BACKENDS)
def deploy(request, tmp_path, reap):
    """``deploy(roles, ready=patterns, **server_keys)`` → ``{role: server}``
    for ``roles`` (role → its services). On Redis each role is a host of its
    own; on the host bus every role is the same server with two workers
    running all the services (a standalone one in worker 0 only, unless it
    runs in ``every_worker``), ready once every worker is. ``ready`` maps a
    role to patterns to wait for on Redis."""
    backend = request.param

    def start(roles, ready=None, **server):
        if backend == "redis":
            hosts = request.getfixturevalue("hosts")
            url = request.getfixturevalue("redis").url
            return {role: hosts(role, services, url, ready=(ready or {}).get(role, ()), **server)
                    for role, services in roles.items()}
        merged = {name: d for services in roles.values() for name, d in services.items()}
        config = write_config(tmp_path, merged, {"workers": {"workers": 2}, "shutdown_timeout": 5,
                                                 **server}, TEST_APPS)
        supervised = reap(Supervised(config))
        return {role: supervised for role in roles}

    start.backend = backend
    return start


def call(method, *params):
    return cbor2.dumps({"lapps": 1, "method": method, "params": list(params)})


async def ask(ws, method, *params):
    await ws.send(call(method, *params))
    return cbor2.loads(await asyncio.wait_for(ws.recv(), 10))["result"]


def started(service, count):
    return [rf"service {service} instance {i} started" for i in range(count)]


# --- config -----------------------------------------------------------------

@pytest.mark.parametrize("server, problem", [
    ({"bus": {"backend": "redis"}},
     '/server/bus/url: required when "backend" is "redis" (redis://HOST[:PORT][/DB])'),
    ({"bus": {"backend": "redis", "url": "rediss://h:1/0"}},
     '/server/bus/url: the scheme must be "redis" (expected redis://HOST[:PORT][/DB]), '
     'got string "rediss://h:1/0"'),
    ({"bus": {"backend": "redis", "url": "redis://h:70000"}},
     "/server/bus/url: the port must be a number from 1 to 65535 (expected "
     'redis://HOST[:PORT][/DB]), got string "redis://h:70000"'),
    ({"bus": {"backend": "redis", "url": "redis://h/zero"}},
     "/server/bus/url: the path must be a database number, e.g. /0 (expected "
     'redis://HOST[:PORT][/DB]), got string "redis://h/zero"'),
    ({"bus": {"backend": "rabbit", "topic": 1}},
     '/server/bus/topic: unknown key\n/server/bus/backend: expected one of "local", "host", '
     '"redis", got string "rabbit"'),
    ({"workers": {"workers": 2}, "bus": {"backend": "local"}},
     "/server/workers/workers: 2 worker processes cannot share the local bus (bcast channels "
     'and mqr queues would be separate in each process); set "bus": {"backend": "host"} '
     '(the default with workers) or "redis", or "workers": 1'),
], ids=["url-missing", "scheme", "port", "db", "backend", "workers-local"])
def test_bus_config_errors(tmp_path, server, problem):
    config = write_config(tmp_path, {}, server)
    result = lapps_check(config)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [f"{config}: {line}" for line in problem.split("\n")]


def test_workers_with_the_redis_bus_and_the_defaults_check(tmp_path, redis):
    """(lapps check, like twistd, also asks Redis for a PING.)"""
    config = write_config(tmp_path, {}, {"workers": {"workers": 2},
                                         "bus": {"backend": "redis", "url": redis.url}})
    assert lapps_check(config).stdout == f"{config}: ok\n"
    from lapps import config as configuration
    defaults = configuration.from_dict({}, str(tmp_path), environ={}).server["bus"]
    assert defaults == {"backend": "local", "url": None, "prefix": "lapps:",
                        "consumer_timeout": 10.0, "history_max_bytes": 16 * 1024 * 1024}


def test_an_unreachable_redis_stops_the_start_with_one_line(tmp_path):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, {"busprobe": reactive("/p", protocol="LAppS")},
                          {"bus": {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0"}},
                          TEST_APPS)
    result = run_twistd(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: bus: cannot reach Redis at redis://127.0.0.1:{port}/0: Connection refused"]
    assert "Traceback" not in result.stdout


# --- bcast ------------------------------------------------------------------

SUBSCRIBERS, BROADCASTS = 50, 200


async def _subscribed(url, channel):
    ws = await websockets.connect(url, max_size=None)
    # subscribe_missing does not create: the channel exists because the
    # producer created it in another process
    assert await ask(ws, "subscribe_missing", channel) == [True]
    return ws


async def _collect(ws, count):
    return [cbor2.loads(await ws.recv()) for _ in range(count)]


async def _pid(ws):
    return (await ask(ws, "pid"))[0]


def test_bcast_reaches_every_subscriber_of_every_process_once_in_order(deploy):
    """A standalone producer in host A (worker 0); 50 subscribers on each of
    hosts B and C (100 over both workers). Each subscriber gets all 200
    messages, once, in order, and nothing else."""
    settings = {"channel": 4242, "go": "go", "count": BROADCASTS, "text": "y" * 64}
    receiving = {"lprobe": reactive("/lprobe", protocol="LAppS", instances=2),
                 "busprobe": reactive("/p", protocol="LAppS", preload=["mqr"])}
    servers = deploy({"a": {"busproducer": standalone(preload=["mqr", "nap"], settings=settings)},
                      "b": receiving, "c": receiving},
                     ready={"a": ["busproducer created 4242"],
                            "b": started("lprobe", 2) + started("busprobe", 1),
                            "c": started("lprobe", 2) + started("busprobe", 1)})
    producer, others = servers["a"], [servers["b"], servers["c"]]

    async def go():
        subscribers = await asyncio.gather(*[_subscribed(host.url("/lprobe"), 4242)
                                             for host in others for _ in range(SUBSCRIBERS)])
        pids = {await _pid(ws) for ws in subscribers}
        async with websockets.connect(others[0].url("/p")) as control:
            assert await ask(control, "post", "go", "now") == [True, "nil"]
        received = await asyncio.gather(*[asyncio.wait_for(_collect(ws, BROADCASTS), 60)
                                          for ws in subscribers])
        for ws in subscribers:  # nothing more came before this answer
            assert await ask(ws, "classify") == [3, "classify", []]
            await ws.close()
        return pids, received

    pids, received = asyncio.run(go())
    assert len(pids) == 2  # the subscribers were in two processes
    assert len(received) == 2 * SUBSCRIBERS
    expected = [{"cid": 7, "message": [i, "y" * 64]} for i in range(1, BROADCASTS + 1)]
    for messages in received:
        assert messages == expected
    producer.wait_for(rf"busproducer sent {BROADCASTS} refused=0")
    for host in [producer] + others:
        assert host.count("Lua error") == 0 and host.count("Unhandled") == 0


@pytest.mark.parametrize("check", [
    bcast_checks.every_subscriber_gets_every_message_once_and_in_order,
    bcast_checks.a_subscriber_that_stops_reading_does_not_delay_the_others,
], ids=lambda check: check.__name__)
def test_the_bcast_probe_runs_unmodified(deploy, check):
    """The local bus's bcast tests, against the same service on a shared bus.
    (Not test_a_disconnected_subscriber_leaves_the_channel: it expects a
    publisher that subscribes to get its own broadcast before the reply to
    its request, as the local bus delivers at once; on a shared bus it comes
    back after one round trip.)"""
    check(deploy({"p": {"lprobe": reactive("/lprobe", protocol="LAppS", instances=3,
                                           max_outbound_buffer=16 * 1024 * 1024)}},
                 ready={"p": started("lprobe", 3)})["p"])  # (as test_bcast's fixture)


class _SilentBus:
    """What RedisBroadcasts needs of the bus: available, but each PUBLISH
    handed to it stays in flight until the test runs it (on a lost link)."""

    available, reactor = True, None

    def __init__(self):
        self.subscribe_hooks, self.sync_hooks, self.calls = [], [], []
        self.command = type("Link", (), {"protocol": None})()

    def key(self, kind, name=b""):
        return b"t:" + kind + name

    def call(self, function, *args):
        self.calls.append((function, args))


def test_a_broadcast_bigger_than_max_in_flight_goes_when_none_is_in_flight():
    """Rather than refused forever; while it is on its way, the next is
    refused; once it has landed, publishing works again."""
    from lapps.bus.redis.bcast import MAX_IN_FLIGHT, RedisBroadcasts
    bus = _SilentBus()
    channels = RedisBroadcasts({}, None, bus, 1 << 20)
    big = b"b" * (MAX_IN_FLIGHT + 1)
    assert channels.publish(3, big) is True
    assert channels.publish(3, b"s") == (
        False, b"the bus is behind: %d bytes of broadcasts are still on their way to Redis"
        % len(big))
    function, args = bus.calls.pop()
    assert args == (b"t:bcast:3", big)
    function(*args)  # the link is down: it lands, unsent
    assert channels.publish(3, b"s") is True


# --- bcast history, recovery and presence ------------------------------------

HISTORY = {"lhistory": reactive("/lhistory", protocol="LAppS", instances=2)}
TICKER = {**HISTORY, "hticker": standalone(preload=["nap"])}
HISTORY_BUS = {"history_max_bytes": 200_000}


@pytest.fixture
def history_hosts(hosts, redis):
    """On Redis: host A runs ``lhistory`` and ``hticker``, host B ``lhistory``
    → ([A's /lhistory, B's], A): the checks produce on A, subscribe on B."""
    ready = started("lhistory", 2)
    a = hosts("a", TICKER, redis.url, ready=ready + started("hticker", 1), bus=HISTORY_BUS)
    b = hosts("b", HISTORY, redis.url, ready=ready, bus=HISTORY_BUS)
    return [a.url("/lhistory"), b.url("/lhistory")], a


@pytest.mark.parametrize("check", [
    history_checks.sends_are_numbered_and_plain_channels_unchanged,
    history_checks.a_position_too_old_or_of_another_epoch_is_not_recovered,
    history_checks.presence_counts_and_lists_every_subscription,
    history_checks.bad_options_get_their_answer], ids=lambda check: check.__name__)
def test_bcast_history_checks_on_redis(history_hosts, check):
    urls, a = history_hosts
    check(urls)
    assert a.bad_lines() == []


def test_presence_forgets_a_host_that_dies_on_redis(history_hosts):
    """Its subscriptions stop counting once its alive: key expires (the
    hosts' consumer_timeout is 2 s)."""
    history_checks.presence_forgets_a_process_that_dies(history_hosts[0])


def test_bcast_recovery_across_a_drop_on_redis(history_hosts):
    """Produced in host A, recovered in host B: the read and pub/sub come on
    two connections, the offsets put them in order."""
    urls, a = history_hosts
    history_checks.a_subscriber_recovers_what_it_missed_across_a_drop(urls, a)
    assert a.bad_lines() == []


def test_bcast_history_stays_bounded_under_a_flood_on_redis(history_hosts):
    history_checks.history_stays_bounded_under_a_flood(history_hosts[0],
                                                       HISTORY_BUS["history_max_bytes"])


def test_a_restart_on_redis_keeps_the_epoch_and_the_history(hosts, redis):
    """The host that created a history channel and sent on it stops; one
    started on the same prefix finds the same epoch and the messages, and
    numbers on from there."""
    first = hosts("first", HISTORY, redis.url, ready=started("lhistory", 2))

    async def sent(url):
        peer = await history_checks.Peer.connect(url)
        assert await peer.ask("create", 77, 10) == [True]
        offsets = (await peer.ask("publish", 77, 3, "kept"))[1]
        held, position = await peer.ask("history", 77)
        await peer.close()
        return offsets, held, position

    offsets, held, position = asyncio.run(sent(first.url("/lhistory")))
    assert offsets == [1, 2, 3] and position["offset"] == 3
    assert first.stop() == -signal.SIGTERM
    second = hosts("second", HISTORY, redis.url, ready=started("lhistory", 2))
    assert history_checks.epoch_of(second.url("/lhistory"), 77) == position["epoch"]
    offsets, held_again, position_again = asyncio.run(sent(second.url("/lhistory")))
    assert offsets == [4, 5, 6]
    assert held_again[:3] == held and [m["offset"] for m in held_again] == [1, 2, 3, 4, 5, 6]
    assert position_again == {"epoch": position["epoch"], "offset": 6}


# --- mqr --------------------------------------------------------------------

def test_mqr_moves_100000_messages_between_processes_none_lost_none_twice(deploy):
    """One sender in host A (worker 0); two receivers in each of hosts B and C
    (in each worker)."""
    settings = {"queue": "numbers", "count": COUNT, "receivers": 4}
    receiving = {"mqcount_receiver": standalone(instances=2, preload=["mqr", "nap"],
                                                settings=settings, every_worker=True)}
    # one end mark per receiver; on Redis spare ones too, as a process whose
    # receivers have ended keeps what it had read ahead (up to PREFETCH)
    # where the other's receivers cannot have it (the host bus takes it back)
    spare = 2 * REDIS_PREFETCH if deploy.backend == "redis" else 0
    servers = deploy({"b": receiving, "c": receiving,
                      "a": {"mqcount_sender": standalone(preload=["mqr", "nap"], settings={
                          **settings, "receivers": settings["receivers"] + spare})}},
                     ready={"b": started("mqcount_receiver", 2),
                            "c": started("mqcount_receiver", 2)},
                     mqr={"max_queue": 1000})
    sender, receivers = servers["a"], [servers["b"], servers["c"]]
    sent = sender.wait_for(r"mqcount sent (\d+) full=(\d+)", timeout=300)
    assert int(sent.group(1)) == COUNT
    pattern = (r"mqcount got (\d+) count=(\d+) dups=(\d+) bad=(\d+) ordered=(\w+) "
               r"bits=([0-9a-f]+) pid=(\d+)")
    if deploy.backend == "redis":
        reports = [host.wait_for(pattern, timeout=60, count=n) for host in receivers
                   for n in (1, 2)]
    else:
        reports = [sender.wait_for(pattern, timeout=60, count=n) for n in (1, 2, 3, 4)]
    counts = [int(r.group(2)) for r in reports]
    for r in reports:
        assert (r.group(3), r.group(4), r.group(5)) == ("0", "0", "true"), r.group(0)[:200]
    assert sum(counts) == COUNT
    by_process = {}
    for r in reports:
        by_process[r.group(7)] = by_process.get(r.group(7), 0) + int(r.group(2))
    assert len(by_process) == 2 and all(by_process.values()), by_process  # both received
    bitmaps = [bitmap(r.group(6)) for r in reports]
    union = 0
    for bits in bitmaps:
        assert union & bits == 0  # nothing delivered twice
        union |= bits
    assert union == (1 << COUNT) - 1  # nothing lost
    for host in receivers + [sender]:
        assert host.count("Lua error") == 0


async def _ask(url, command, answer):
    async with websockets.connect(url) as ws:
        await ws.send(command)
        assert await asyncio.wait_for(ws.recv(), 10) == answer


def test_mqr_loses_nothing_when_a_receiving_process_is_killed(deploy, tmp_path):
    """The receiving host B (worker 1) is killed (SIGKILL) mid-stream; what
    it had taken and not finished goes to the other receivers: every number
    is recorded by a receiver, and only numbers B recorded may be recorded
    again. The sender's closing {done} messages wait until the others have
    B's entries (the receivers stop at them)."""
    count = 20_000
    out = tmp_path / "got-"
    host_bus = deploy.backend == "host"
    # on the host bus, worker 1 comes back with two new receivers: four take a {done}
    settings = {"queue": "work", "count": count, "receivers": 4 if host_bus else 2,
                "out": str(out), "mark": 2000, "release": "release"}
    receiving = {"busrecorder": standalone(instances=2, preload=["mqr", "nap"],
                                           settings=settings, every_worker=True)}
    servers = deploy({"b": receiving, "c": receiving,
                      "a": {"mqcount_sender": standalone(preload=["mqr", "nap"],
                                                         settings=settings),
                            "mqprobe": reactive("/mq", preload=["mqr"])}},
                     ready={"b": started("busrecorder", 2), "c": started("busrecorder", 2)},
                     mqr={"max_queue": 200})
    doomed, survivor, sender = servers["b"], servers["c"], servers["a"]
    if host_bus:
        worker = doomed.worker_pids()[1]
        doomed.wait_for(rf"busrecorder mark \d+ pid={worker}", timeout=60)
        os.kill(worker, signal.SIGKILL)
        started_at = time.monotonic()
        doomed.wait_event("server.ready", lapps_worker=1, count=2, timeout=60)  # its successor
    else:
        doomed.wait_for(r"busrecorder mark", timeout=60)
        doomed.process.kill()
        doomed.process.wait()
        started_at = time.monotonic()
        survivor.wait_for(r"mqr queue work: took \d+ entries of the dead consumer", timeout=60)
    asyncio.run(_ask(sender.url("/mq"), "postraw release go", "true nil"))
    sender.wait_for(rf"mqcount sent {count} full=\d+", timeout=300)
    done = [survivor.wait_for(r"busrecorder done (\d+) count=(\d+)", timeout=60, count=n)
            for n in range(1, settings["receivers"] + 1)]
    recorded = {}
    for path in tmp_path.glob("got-*"):
        recorded[path.name] = [int(line) for line in path.read_text().split()]
    survivor_ids = {m.group(1) for m in done}
    from_survivor = [n for name, got in recorded.items() if name[4:] in survivor_ids for n in got]
    from_doomed = [n for name, got in recorded.items() if name[4:] not in survivor_ids
                   for n in got]
    assert len(recorded) == settings["receivers"] + 2 and len(from_doomed) >= 2000
    assert len(set(from_survivor)) == len(from_survivor)  # the others got nothing twice
    assert set(from_survivor) | set(from_doomed) == set(range(1, count + 1))  # nothing lost
    again = set(from_survivor) & set(from_doomed)
    print(f"killed process had recorded {len(from_doomed)}; recorded again by the others: "
          f"{len(again)}; rest took {time.monotonic() - started_at:.1f} s")
    assert len(again) <= 64  # at most what B had taken and not yet acknowledged
    assert sum(int(m.group(2)) for m in done) == len(from_survivor)


@pytest.mark.parametrize("check", [
    mqr_checks.a_full_queue_refuses_and_loses_nothing, mqr_checks.values_are_copies,
    mqr_checks.scalars_and_usage, mqr_checks.recv_suspends_only_its_instance,
    mqr_checks.a_recv_that_could_not_suspend_takes_nothing,
    mqr_checks.standalone_and_reactive_hand_values_to_each_other,
    mqr_checks.stop_ends_every_wait], ids=lambda check: check.__name__)
def test_the_mqr_probe_runs_unmodified(deploy, check):
    """The local bus's mqr tests, against the same services on a shared bus."""
    check(deploy({"p": {"mqprobe": reactive("/mq", instances=2, preload=["mqr"]),
                        "mqrelay": standalone(preload=["mqr"], stop_timeout=3)}},
                 ready={"p": started("mqprobe", 2) + started("mqrelay", 1)},
                 mqr={"max_queue": 50})["p"])


def test_mqr_bounds_the_bytes_of_a_shared_queue(deploy):
    """The local bus's byte bound, held by the hub or Redis."""
    mqr_checks.a_queue_full_of_bytes_refuses_until_one_is_taken(
        deploy({"p": {"mqprobe": reactive("/mq", preload=["mqr"])}},
               ready={"p": started("mqprobe", 1)}, mqr=BYTES_BOUND)["p"])


def test_host_bus_entries_go_to_the_worker_whose_receiver_waits(tmp_path, reap):
    """The waiting receiver in another worker than the one that gave the hub
    credit and left (a recv that could not suspend): what the hub handed to
    the first worker goes back and on to the receiver."""
    server = reap(Supervised(write_config(
        tmp_path, {"mqprobe": reactive("/mq", instances=2, preload=["mqr"])},
        {"workers": {"workers": 2}}, TEST_APPS)))
    workers = sorted(server.worker_pids().values())

    async def go():
        failing = await _client_on(server, workers[0])
        await failing.send("cororecv placed")
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(failing.recv(), 10)
        receiver = await _client_on(server, workers[1])
        poster = await _client_on(server, workers[0])
        await receiver.send("recv placed")  # (its instance takes no other message meanwhile)
        posted = [await _text(poster, f'post placed {{"x":{i}}}') for i in range(3)]
        got = [await asyncio.wait_for(receiver.recv(), 10)]
        got += [await _text(receiver, "recv placed") for _ in range(2)]
        return posted, got

    posted, got = asyncio.run(go())
    assert posted == ["true nil"] * 3
    assert got == [f'{{"x":{i}}} nil' for i in range(3)]


async def _text(ws, text):
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10)


async def _client_on(server, pid):
    """A connection to /mq served by the worker ``pid``."""
    while True:
        ws = await websockets.connect(server.url("/mq"))
        if int(await _text(ws, "pid -")) == pid:
            return ws
        await ws.close()


def _numbers(replies):
    """The numbers fillraw put in front of what ``recv`` replies."""
    return [int(re.match(r"string:(\d+):", reply).group(1)) for reply in replies]


def test_host_bus_bytes_given_back_on_idle_count_once(tmp_path, reap):
    """Worker 1 takes one of a full queue's entries and holds 7 more, which
    go back to the hub once it idles; worker 0 takes all the rest, and the
    queue holds 15 again: nothing freed twice or not at all."""
    server = reap(Supervised(write_config(
        tmp_path, {"mqprobe": reactive("/mq", preload=["mqr"])},
        {"workers": {"workers": 2}, "mqr": BYTES_BOUND}, TEST_APPS)))
    workers = sorted(server.worker_pids().values())

    async def go():
        mine, other = await _client_on(server, workers[0]), await _client_on(server, workers[1])
        filled = await _text(mine, "fillraw big 65536")
        first = _numbers([await _text(other, "recv big")])   # and 2..8 wait in worker 1
        again = await _text(mine, "fillraw big 65536")
        got = [int(n) for n in (await _text(mine, "drainraw big")).split(",")]
        got += _numbers([await _text(mine, "recv big") for _ in range(15 - len(got))])
        return filled, first, again, got, await _text(mine, "fillraw big 65536")

    filled, first, again, got, refilled = asyncio.run(go())
    assert (filled, first, again) == ("ok=15 err=queue full", [1], "ok=1 err=queue full")
    assert sorted(got) == list(range(1, 16))  # 2..15, and the 1 posted again
    assert refilled == filled


def test_redis_bus_bytes_claimed_from_a_dead_consumer_count_once(hosts, redis):
    """Host B takes one of a full queue's entries, holds 7 more and is
    killed; A claims those 7 once B counts as dead, takes all, and the
    queue holds 15 again: nothing freed twice or not at all."""
    probe = {"mqprobe": reactive("/mq", preload=["mqr"])}
    a, b = (hosts(name, probe, redis.url, ready=started("mqprobe", 1), mqr=BYTES_BOUND)
            for name in "ab")

    async def go():
        mine, other = [await websockets.connect(host.url("/mq")) for host in (a, b)]
        filled = await _text(mine, "fillraw big 65536")
        first = _numbers([await _text(other, "recv big")])  # and 2..8 wait in B
        # (a post answered after the recv's acknowledgement, on one connection)
        assert await _text(other, "postraw elsewhere x") == "true nil"
        b.process.kill()
        b.process.wait()
        again = await _text(mine, "fillraw big 65536")
        got = await _text(mine, "drainraw big")
        a.wait_for(r"mqr queue big: took 7 entries of the dead consumer", timeout=30)
        got += "," + await _text(mine, "drainraw big")
        return filled, first, again, got, await _text(mine, "fillraw big 65536")

    filled, first, again, got, refilled = asyncio.run(go())
    assert (filled, first, again) == ("ok=15 err=queue full", [1], "ok=1 err=queue full")
    assert got == ",".join(str(n) for n in [*range(9, 16), 1, *range(2, 9)])
    assert refilled == filled


# --- Redis lost and back ----------------------------------------------------

def test_redis_stopped_then_back(tmp_path, hosts):
    """While Redis is stopped, bcast and mqr calls return false (or nil)
    and a message at once, a suspended recv ends with the message, and the
    server goes on; once Redis is back, traffic resumes without a restart
    and nothing a post accepted is lost."""
    redis = RedisServer(tmp_path).start()
    try:
        host = hosts("a", {"busprobe": reactive("/p", protocol="LAppS", instances=2,
                                                preload=["mqr"])},
                     redis.url, ready=started("busprobe", 2))
        url = host.url("/p")
        unavailable = (f"the bus is unavailable: Redis at {redis.url}: connection lost")

        async def before():
            async with websockets.connect(url) as ws:
                assert await ask(ws, "create", 5) == [True]
                assert await ask(ws, "subscribe", 5) == [True]
                assert await ask(ws, "send", 5, "hello") == [True]
                assert cbor2.loads(await ws.recv()) == {"cid": 7, "message": ["hello"]}
                for n in range(3):  # accepted before the outage: kept
                    assert await ask(ws, "post", "kept", f"m{n}") == [True, "nil"]
            waiting = await websockets.connect(url)  # instance 0
            other = await websockets.connect(url)    # instance 1
            await waiting.send(call("recv", "nothing"))
            assert await ask(other, "ping") == ["pong"]
            return waiting, other

        async def during(waiting, other):
            suspended = cbor2.loads(await asyncio.wait_for(waiting.recv(), 10))["result"]
            results = [await ask(other, "send", 5, "lost"), await ask(other, "post", "kept", "x"),
                       await ask(other, "try", "kept"), await ask(other, "recv", "kept"),
                       await ask(other, "ping")]
            await waiting.close()
            await other.close()
            return suspended, results

        async def after():
            async with websockets.connect(url) as ws:
                assert await ask(ws, "subscribe", 5) == [True]
                sent = await ask(ws, "send", 5, "again")
                pushed = cbor2.loads(await asyncio.wait_for(ws.recv(), 10))
                kept = [await ask(ws, "recv", "kept") for _ in range(3)]
                return sent, pushed, kept, await ask(ws, "try", "kept")

        loop = asyncio.new_event_loop()
        waiting, other = loop.run_until_complete(before())
        redis.stop()
        host.wait_for(r"bus unavailable: the bus is unavailable")
        suspended, results = loop.run_until_complete(during(waiting, other))
        assert suspended == ["nil", unavailable]
        assert results == [[False, unavailable], [False, unavailable], ["nil", unavailable],
                           ["nil", unavailable], ["pong"]]
        host.wait_for(r"bus link command to \S+: retry")
        redis.start()
        host.wait_for("bus available", count=2, timeout=30)
        sent, pushed, kept, empty = loop.run_until_complete(after())
        loop.close()
        assert sent == [True]
        assert pushed == {"cid": 7, "message": ["again"]}
        assert kept == [["m0", "nil"], ["m1", "nil"], ["m2", "nil"]]
        assert empty == ["nil"]
        assert host.count("Lua error") == 0 and host.count("Unhandled") == 0
    finally:
        redis.stop()


@pytest.mark.parametrize("message", [b"B", b"B123", b"C", b"P\0\0", b"W\0\0\0\5ab",
                                     b"A\0\0\0\1q\0\0\0", b"R\0\0\0\1q\1", b"F", b"Z"])
def test_a_malformed_message_from_a_worker_drops_its_link_only(message):
    """The hub (in the supervisor) never raises on what a worker sends; the
    other worker's link stays, and gets nothing of it."""
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from lapps.bus.host.hub import Hub, WorkerLink
    hub = Hub(10, MemoryReactorClock())
    ends = []
    for index in (0, 1):
        link, transport = WorkerLink(hub, index), StringTransport()
        link.makeConnection(transport)
        ends.append((link, transport))
    (bad, bad_transport), (good, good_transport) = ends
    synced = good_transport.value()
    bad.stringReceived(message)
    assert bad_transport.disconnecting and not good_transport.disconnecting
    assert good_transport.value() == synced


def test_a_host_bus_peer_that_reads_slowly_but_steadily_is_not_cut():
    """What counts against MAX_BEHIND is what the peer has yet to read, not
    all that was written while it lagged: a peer always 8 MiB behind that
    takes 128 MiB keeps its link, and gets every byte in order."""
    import socket
    from twisted.internet.selectreactor import SelectReactor
    from lapps.bus.host import wire

    class Sender(wire.Peer):
        cut = False

        def received(self, message):
            pass

        def too_far_behind(self):
            self.cut = True
            super().too_far_behind()

    reactor, sender = SelectReactor(), Sender()
    ours, theirs = socket.socketpair()
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, wire.OneProtocol(sender))
    ours.close()
    theirs.setblocking(False)
    message = b"m" * (32 * 1024 - 4)
    framed = len(message) + 4
    per_round, lag, rounds = 32, 8 * 1024 * 1024, 128  # 1 MiB a round
    received = bytearray()

    def read_until(total):
        while len(received) < total:
            reactor.doIteration(0.01)
            try:
                received.extend(theirs.recv(1 << 20))
            except BlockingIOError:
                pass

    for number in range(rounds):
        for _ in range(per_round):
            sender.send(message)
        sent = (number + 1) * per_round * framed
        read_until(max(0, sent - lag))
        assert not sender.cut and sender.behind <= lag + per_round * framed
    read_until(rounds * per_round * framed)
    assert received == (wire.U32.pack(len(message)) + message) * (rounds * per_round)
    sender.transport.abortConnection()
    theirs.close()
