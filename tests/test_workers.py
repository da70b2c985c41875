"""Worker processes (``workers.workers`` > 1): ``twistd -n lapps`` as a
subprocess on the host bus (or a real redis-server), its events read as JSON lines
(``--logger lapps.logs.json_lines``), real WebSocket clients; the
``pidreport`` service answers with the id of the worker process it runs in."""

import asyncio
import errno
import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest
import websockets
from twisted.internet.testing import MemoryReactorClock

import cbor2
from conftest import TEST_APPS, Supervised, call, lapps_check, reactive, run_twistd, write_config
from lapps import config as configuration
from lapps import devcert
from lapps.workers.supervisor import Supervisor
from redis_server import free_port
from support.workers import all_exit_within, pid_of_new_connection


def redis_bus(redis):
    return {"backend": "redis", "url": redis.url, "prefix": f"w{uuid.uuid4().hex[:8]}:"}


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


PIDREPORT = {"pidreport": reactive("/pid", instances=2)}


@pytest.mark.parametrize("fast_path, bus", [(True, "host"), (False, "host"), (True, "redis")],
                         ids=["fast_path", "no_fast_path", "redis"])
def test_connections_spread_over_two_worker_processes_on_one_port(supervised, request, fast_path,
                                                                  bus):
    extra = {"bus": redis_bus(request.getfixturevalue("redis"))} if bus == "redis" else {}
    server = supervised(PIDREPORT, fast_path=fast_path, **extra)

    async def pids():
        return await asyncio.gather(*[pid_of_new_connection(server) for _ in range(40)])

    answered = set(asyncio.run(pids()))
    assert answered == set(server.worker_pids().values())
    assert len(answered) == 2
    assert {parent_of(pid) for pid in answered} == {server.process.pid}
    # port 0: the supervisor chose one port, on which both workers listen
    ports = {e["port"] for e in server.events("listener.up")}
    assert ports == {server.port} and server.port != 0
    ready = server.wait_event("server.ready", lapps_worker=None)
    assert (ready["workers"], ready["pids"]) == (2, [server.worker_pids()[0],
                                                     server.worker_pids()[1]])


def test_a_killed_worker_is_restarted_and_serves_new_connections(supervised):
    server = supervised(PIDREPORT)
    old = server.worker_pids()
    os.kill(old[1], signal.SIGKILL)
    ended = server.wait_event("worker.exit", pid=old[1])
    assert (ended["index"], ended["signal"], ended["exit_code"]) == (1, "SIGKILL", None)
    assert server.wait_event("worker.restart", index=1)["delay"] == 0.5
    new = server.wait_event("worker.start", index=1, restarts=1)["pid"]
    assert new != old[1] and parent_of(new) == server.process.pid
    server.wait_event("server.ready", lapps_worker=1, lapps_worker_pid=new)

    async def until_the_new_worker_answers():
        deadline = time.monotonic() + 20
        seen = set()
        while new not in seen:
            assert time.monotonic() < deadline, f"only {seen} answered"
            seen.add(await pid_of_new_connection(server))
        return seen

    assert asyncio.run(until_the_new_worker_answers()) <= {old[0], new}
    assert not alive(old[1])
    assert server.worker_pids() == {0: old[0], 1: new}


def test_sigterm_stops_every_worker_with_1001_to_every_client(supervised):
    server = supervised(PIDREPORT)
    pids = set(server.worker_pids().values())

    async def scenario():
        clients = [await websockets.connect(server.url("/pid")) for _ in range(20)]
        served_by = set()
        for ws in clients:
            await ws.send("?")
            served_by.add(int(await ws.recv()))
        assert served_by == pids  # both workers have clients
        server.process.send_signal(signal.SIGTERM)
        for ws in clients:
            await asyncio.wait_for(ws.wait_closed(), 15)
        return [ws.close_code for ws in clients]

    assert asyncio.run(scenario()) == [1001] * 20
    assert server.stop() == -signal.SIGTERM
    assert {e["pid"] for e in server.events("worker.exit")} == pids
    assert {e["exit_code"] for e in server.events("worker.exit")} == {0}
    assert server.events("workers.stopped") and not server.events("worker.restart")
    assert not any(alive(pid) for pid in pids)


def write_lapps_pair(directory, services, workers=3):
    """LAppS's own deployment shape: ``ws.json`` with every LAppS key and
    ``workers`` IO workers (3 in its examples), and ``lapps.json`` with the
    services and every directory; no ``bus``. Returns the lapps.json path."""
    directory = Path(directory)
    ca, key = devcert.make_ca()
    cert, cert_key = devcert.make_server_cert(ca, key)
    for name, pem in (("ca.pem", devcert.pem_cert(ca)), ("localhost.crt", devcert.pem_cert(cert)),
                      ("localhost.key", devcert.pem_key(cert_key))):
        (directory / name).write_bytes(pem)
    for name in ("deploy", "tmp", "etc", "workdir"):
        (directory / name).mkdir()
    (directory / "ws.json").write_text(json.dumps({
        "listeners": 3, "connection_weight": 1.0, "ip": "127.0.0.1", "port": 0,
        "lapps_config_auto_save": False,
        "workers": {"workers": workers, "max_connections": 10000, "auto_fragment": False,
                    "max_poll_events": 256, "max_poll_wait_ms": 10, "max_inbounds_skip": 50,
                    "input_buffer_size": 2048},
        "acl": {"policy": "allow", "exclude": []},
        "tls": False, "tls_server_version": 4, "tls_client_version": 4,
        "tls_certificates": {"ca": str(directory / "ca.pem"),
                             "cert": str(directory / "localhost.crt"),
                             "key": str(directory / "localhost.key")}}, indent=2))
    path = directory / "lapps.json"
    path.write_text(json.dumps({
        "directories": {"applications": str(TEST_APPS), "deploy": str(directory / "deploy"),
                        "tmp": str(directory / "tmp"), "app_conf_dir": "etc",
                        "workdir": "workdir"},
        "services": services}, indent=2))
    return path


LAPPS_PIDREPORT = {"pidreport": {
    "internal": False, "auto_start": True, "instances": 2, "protocol": "raw",
    "request_target": "/pid", "max_inbound_message_size": 16777216, "preload": [],
    "depends": [], "acl": {"policy": "allow", "exclude": []}}}


def test_the_lapps_deployment_shape_runs_three_workers_unmodified(tmp_path, reap):
    """LAppS's "workers": 3 meant IO threads; here it is 3 processes on the
    host bus, with no bus configured."""
    server = reap(Supervised(write_lapps_pair(tmp_path, LAPPS_PIDREPORT)))
    assert len(server.worker_pids()) == 3
    assert server.wait_event("bus.available", count=3)["lapps_worker"] in (0, 1, 2)

    async def pids():
        return await asyncio.gather(*[pid_of_new_connection(server) for _ in range(30)])

    answered = asyncio.run(pids())
    assert len(answered) == 30 and len(set(answered)) >= 2
    assert set(answered) <= set(server.worker_pids().values())
    assert server.stop() == -signal.SIGTERM
    assert not any("Traceback" in line for line in server.lines)


@pytest.mark.parametrize("workers", ["auto", 3], ids=["auto", "lapps_pair"])
def test_lapps_check_accepts_auto_and_the_lapps_pair(tmp_path, workers):
    config = write_lapps_pair(tmp_path, LAPPS_PIDREPORT, workers=workers)
    result = lapps_check(config)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{config}: ok\n", "")


def test_auto_is_the_cpus_this_process_may_use(tmp_path):
    config = write_config(tmp_path, PIDREPORT, {"workers": {"workers": "auto"}}, TEST_APPS)
    loaded = configuration.load(str(config))
    assert loaded.server["workers"]["workers"] == len(os.sched_getaffinity(0))
    assert loaded.server["bus"]["backend"] == ("host" if len(os.sched_getaffinity(0)) > 1
                                               else "local")


def test_a_killed_supervisor_takes_every_worker_with_it(supervised):
    server = supervised(PIDREPORT)
    pids = list(server.worker_pids().values())
    server.process.kill()
    server.process.wait()
    assert all_exit_within(pids, 5)


async def lprobe_clients(server, count):
    """``count`` clients of ``/lprobe``, each with the pid of the worker serving it."""
    clients = []
    for _ in range(count):
        ws = await websockets.connect(server.url("/lprobe"), max_size=None)
        await ws.send(call("pid"))
        clients.append((ws, cbor2.loads(await asyncio.wait_for(ws.recv(), 10))["result"][0]))
    return clients


async def broadcasts(ws, count):
    """The numbers of the next ``count`` broadcasts (cid 7) ``ws`` gets."""
    numbers = []
    while len(numbers) < count:
        message = cbor2.loads(await asyncio.wait_for(ws.recv(), 20))
        if message["cid"] == 7:
            numbers.append(message["message"][0])
    return numbers


LPROBE = {"lprobe": reactive("/lprobe", protocol="LAppS", instances=2,
                             max_outbound_buffer=200 * 1024 * 1024)}


def test_a_killed_worker_leaves_the_channel_and_the_others_keep_receiving(supervised):
    server = supervised(LPROBE)
    pids = server.worker_pids()

    async def scenario():
        clients = await lprobe_clients(server, 16)
        for ws, _ in clients:
            await ws.send(call("subscribe", 77))
            assert cbor2.loads(await ws.recv())["result"] == [True]
        doomed = [ws for ws, pid in clients if pid == pids[1]]
        survivors = [ws for ws, pid in clients if pid == pids[0]]
        assert doomed and survivors
        os.kill(pids[1], signal.SIGKILL)
        for ws in doomed:
            await asyncio.wait_for(ws.wait_closed(), 10)
        new = server.wait_event("worker.start", index=1, restarts=1)["pid"]
        server.wait_event("server.ready", lapps_worker=1, lapps_worker_pid=new)
        # a subscriber on the new worker: the channel exists there too
        late, pid = (await lprobe_clients(server, 1))[0]
        while pid != new:
            await late.close()
            late, pid = (await lprobe_clients(server, 1))[0]
        await late.send(call("subscribe", 77))
        assert cbor2.loads(await late.recv())["result"] == [True]
        publisher = survivors[0]
        await publisher.send(call("publish", 77, 50, "x"))
        got = [await broadcasts(ws, 50) for ws in survivors + [late]]
        return [ws.close_code for ws in doomed], got

    codes, got = asyncio.run(scenario())
    assert set(codes) == {1006}
    assert got == [list(range(1, 51))] * len(got)
    assert server.worker_pids()[0] == pids[0]
    assert server.count("Unhandled") == 0 and server.count("Traceback") == 0


async def first_broadcast_arrives(publisher, subscriber, channel):
    """Publish on ``channel`` until a send is accepted (the channel the
    subscriber's worker created reaches the publisher's through the hub),
    then see it arrive."""
    deadline = time.monotonic() + 15
    while True:
        await publisher.send(call("publish_counted", channel, 1, "first"))
        if cbor2.loads(await asyncio.wait_for(publisher.recv(), 10))["result"] == [1]:
            break
        assert time.monotonic() < deadline
    assert cbor2.loads(await asyncio.wait_for(subscriber.recv(), 10))["message"] == [1, "first"]


def test_a_worker_whose_link_breaks_closes_its_clients_1011_and_is_restarted(supervised):
    """A stopped worker (SIGSTOP) reads nothing: the hub drops its link once
    more than 64 MiB of broadcasts wait for it. Woken, the worker finds the
    link gone, closes its clients 1011 and exits 75 (EX_TEMPFAIL). (Its silence
    meanwhile is allowed for: a stall_timeout of 60 s.)"""
    server = supervised(LPROBE, limits={"stall_timeout": 60})
    pids = server.worker_pids()

    async def scenario():
        clients = await lprobe_clients(server, 12)
        stranded = [ws for ws, pid in clients if pid == pids[1]]
        publisher = next(ws for ws, pid in clients if pid == pids[0])
        assert stranded
        await stranded[0].send(call("subscribe", 5))
        assert cbor2.loads(await stranded[0].recv())["result"] == [True]
        await first_broadcast_arrives(publisher, stranded[0], 5)
        os.kill(pids[1], signal.SIGSTOP)
        try:  # 8 MiB a call, until the hub gives up on worker 1
            deadline = time.monotonic() + 60
            while not server.events("bus.worker_behind", index=1):
                assert time.monotonic() < deadline
                await publisher.send(call("publish_counted", 5, 256, "z" * 32768))
                await asyncio.wait_for(publisher.recv(), 30)
        finally:
            os.kill(pids[1], signal.SIGCONT)
        for ws in stranded:
            await asyncio.wait_for(ws.wait_closed(), 15)
        return [ws.close_code for ws in stranded]

    assert set(asyncio.run(scenario())) == {1011}
    assert server.wait_event("worker.exit", pid=pids[1])["exit_code"] == 75
    server.wait_event("bus.link_lost", lapps_worker=1)
    new = server.wait_event("worker.start", index=1, restarts=1)["pid"]
    server.wait_event("server.ready", lapps_worker=1, lapps_worker_pid=new)
    assert server.worker_pids()[0] == pids[0]
    assert server.count("Traceback") == 0


def test_sighup_reloads_every_worker(supervised):
    server = supervised(PIDREPORT)
    server.process.send_signal(signal.SIGHUP)
    for index in (0, 1):
        server.wait_event("config.reloaded", lapps_worker=index)
    assert server.events("workers.reload")[0]["pids"] == [server.worker_pids()[0],
                                                         server.worker_pids()[1]]


@pytest.mark.parametrize("every_worker, runs_in", [(None, {0}), (True, {0, 1})],
                         ids=["once_per_host", "every_worker"])
def test_a_standalone_service_runs_once_per_host_unless_every_worker(supervised, every_worker,
                                                                     runs_in):
    ticker = {"standalone": True, "preload": ["nap", "time"]}
    if every_worker is not None:
        ticker["every_worker"] = every_worker
    server = supervised({**PIDREPORT, "ticker": ticker})
    services = {i: server.wait_event("server.ready", lapps_worker=i)["services"] for i in (0, 1)}
    assert services == {i: 2 if i in runs_in else 1 for i in (0, 1)}
    for index in runs_in:
        server.wait_event("instance.start", service="ticker", lapps_worker=index)


def test_a_port_in_use_stops_the_start_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, PIDREPORT, {"port": port, "workers": {"workers": 2}},
                              TEST_APPS)
        result = run_twistd(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: cannot listen on 127.0.0.1 port {port}: Address already in use"]
    assert "Traceback" not in result.stdout


def test_a_second_server_on_the_same_port_is_refused(supervised, tmp_path):
    """Its workers would bind beside the first one's (same user, SO_REUSEPORT)
    and take half the connections: the supervisor refuses to start instead."""
    first = supervised(PIDREPORT, port=free_port())
    (tmp_path / "second").mkdir()
    config = write_config(tmp_path / "second", PIDREPORT, {
        "port": first.port, "workers": {"workers": 2}}, TEST_APPS)
    result = run_twistd(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: cannot listen on 127.0.0.1 port {first.port}: Address already in use"]
    assert first.process.poll() is None


def test_a_service_that_does_not_load_stops_the_start_as_in_one_process(tmp_path):
    config = write_config(tmp_path, {"broken": reactive("/b")}, {"workers": {"workers": 2}},
                          TEST_APPS)
    result = run_twistd(config)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{config}: /services/broken: ")
    assert "Traceback" not in result.stdout


def test_a_worker_that_cannot_start_is_retried_with_a_doubling_delay(supervised, tmp_path):
    """A restarted worker reads the service modules again: while one is
    broken it exits at once (78, its error relayed), and the delays double;
    once mended, the worker serves again."""
    apps = tmp_path / "apps"
    (apps / "pidreport").mkdir(parents=True)
    module = apps / "pidreport" / "pidreport.lua"
    module.write_bytes((TEST_APPS / "pidreport" / "pidreport.lua").read_bytes())
    server = supervised(PIDREPORT, applications=apps)
    good = module.read_text()
    module.write_text("this is not Lua")
    os.kill(server.worker_pids()[1], signal.SIGKILL)
    delays = [server.wait_event("worker.restart", count=n, index=1)["delay"] for n in (1, 2, 3)]
    assert delays == [0.5, 1.0, 2.0]
    failed = server.events("worker.exit", index=1)[1:]
    assert failed and {e["exit_code"] for e in failed} == {78}
    assert server.events("worker.config_error", lapps_worker=1)
    module.write_text(good)
    new = server.wait_event("server.ready", count=2, lapps_worker=1, timeout=40)["lapps_worker_pid"]
    assert new == server.worker_pids()[1] and parent_of(new) == server.process.pid


def test_a_worker_that_does_not_stop_is_killed(supervised):
    """shutdown_timeout + 5 s after the SIGTERM, a worker still running (here
    a stopped one: SIGSTOP) gets SIGKILL, and the supervisor exits."""
    server = supervised(PIDREPORT, shutdown_timeout=0.5)
    pids = server.worker_pids()
    os.kill(pids[1], signal.SIGSTOP)
    assert server.stop(timeout=30) == -signal.SIGTERM
    assert server.events("worker.killed")[0]["pids"] == [pids[1]]
    ends = {e["pid"]: (e["exit_code"], e["signal"]) for e in server.events("worker.exit")}
    assert ends == {pids[0]: (0, None), pids[1]: (None, "SIGKILL")}
    assert not alive(pids[1])


class _NoFork(MemoryReactorClock):
    """A reactor on which no process can be started (as with no descriptors
    left): the one thing a real test cannot make the kernel refuse on cue."""

    def spawnProcess(self, *args, **kwargs):
        self.spawns = getattr(self, "spawns", 0) + 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_a_worker_that_cannot_be_spawned_is_tried_again_with_backoff(tmp_path):
    config = write_config(tmp_path, PIDREPORT, {"workers": {"workers": 2}}, TEST_APPS)
    reactor = _NoFork()
    supervisor = Supervisor(configuration.load(str(config)), reactor)
    supervisor.startService()
    reactor.run()  # the callWhenRunning start
    assert reactor.spawns == 2
    for delay, spawns in ((0.5, 4), (1.0, 6), (2.0, 8)):
        reactor.advance(delay - 0.01)
        assert reactor.spawns == spawns - 2
        reactor.advance(0.01)
        assert reactor.spawns == spawns
    assert [w.pid for w in supervisor.workers] == [None, None]
    supervisor.stopService()
    assert not reactor.getDelayedCalls()  # no retry left behind


def test_the_log_relay_reassembles_split_lines_and_skips_unreadable_ones():
    from twisted.logger import eventAsJSON
    from lapps.workers.relay import EventRelay

    published, seen = [], []
    relay = EventRelay(3, 4242, seen.append, publisher=published.append)
    good = [eventAsJSON({"lapps_event": f"e{i}", "text": "é\n"}).encode() + b"\n"
            for i in range(3)]
    stream = (good[0] + b"\xff\xfe\n" + b"123\n" + b"[" * 100_000 + b"\n" + good[1]
              + b'{"cut": \n' + good[2])
    for i in range(0, len(stream), 7):  # every line split across reads
        relay.data_received(stream[i:i + 7])
    relay.flush()
    assert [e["lapps_event"] for e in published] == ["e0", "e1", "e2"]
    assert [e["text"] for e in published] == ["é\n"] * 3
    assert all(e["lapps_worker"] == 3 and e["lapps_worker_pid"] == 4242 for e in published)
    assert seen == published
