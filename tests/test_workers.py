"""Worker processes (``workers.workers`` > 1): ``twistd -n lapps`` as a
subprocess with a real redis-server, its events read as JSON lines
(``--logger lapps.logs.json_lines``), real WebSocket clients; the
``pidreport`` service answers with the id of the worker process it runs in."""

import asyncio
import errno
import json
import os
import re
import signal
import socket
import time
import uuid

import pytest
import websockets
from twisted.internet.testing import MemoryReactorClock

from conftest import TEST_APPS, TWISTD, Server, reactive, run_twistd, write_config
from lapps import config as configuration
from lapps.workers.supervisor import Supervisor
from redis_server import free_port

_LISTENING = re.compile(r'"host": "([^"]+)", "port": (\d+), "tls"')  # a worker's listener.up
_READY = re.compile(r"lapps ready: \{workers\} workers")  # the supervisor's server.ready


class Supervised(Server):
    """A ``twistd -n lapps`` with worker processes, logging JSON lines."""

    def __init__(self, config_path):
        super().__init__(config_path, argv=TWISTD + [
            "-n", "--pidfile=", "--logger", "lapps.logs.json_lines", "lapps",
            "--config", str(config_path)], listening=_LISTENING, ready=_READY)

    def events(self, name, **fields):
        """The events logged so far named ``name`` with these field values."""
        found = []
        for line in self.lines:
            if line.startswith("{") and f'"{name}"' in line:
                event = json.loads(line)
                if event.get("lapps_event") == name and \
                        all(event.get(k) == v for k, v in fields.items()):
                    found.append(event)
        return found

    def wait_event(self, name, count=1, timeout=20.0, **fields):
        """Block until ``count`` events ``name`` with these fields were logged;
        return the last of them."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rf'"lapps_event": "{re.escape(name)}"')
        while len(found := self.events(name, **fields)) < count:
            seen = self.count(pattern)
            self.wait_for(pattern, timeout=max(0.0, deadline - time.monotonic()), count=seen + 1)
        return found[count - 1]

    def worker_pids(self):
        """Worker index → pid of its latest start."""
        return {e["index"]: e["pid"] for e in self.events("worker.start")}


@pytest.fixture
def supervised(tmp_path, redis, reap):
    """``supervised(services, applications=TEST_APPS, **server_keys)`` → a
    running :class:`Supervised` with two workers on the Redis bus (a prefix
    of its own); killed after the test if still running."""
    def start(services, applications=TEST_APPS, **server):
        bus = {"backend": "redis", "url": redis.url, "prefix": f"w{uuid.uuid4().hex[:8]}:"}
        config = write_config(tmp_path, services, {"workers": {"workers": 2}, "bus": bus,
                                                   "shutdown_timeout": 5, **server}, applications)
        return reap(Supervised(config))

    return start


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def pid_of_new_connection(server):
    async with websockets.connect(server.url("/pid")) as ws:
        await ws.send("?")
        return int(await asyncio.wait_for(ws.recv(), 10))


PIDREPORT = {"pidreport": reactive("/pid", instances=2)}


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "no_fast_path"])
def test_connections_spread_over_two_worker_processes_on_one_port(supervised, fast_path):
    server = supervised(PIDREPORT, fast_path=fast_path)

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


def test_a_port_in_use_stops_the_start_with_one_line(tmp_path, redis):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, PIDREPORT, {
            "port": port, "workers": {"workers": 2},
            "bus": {"backend": "redis", "url": redis.url}}, TEST_APPS)
        result = run_twistd(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: cannot listen on 127.0.0.1 port {port}: Address already in use"]
    assert "Traceback" not in result.stdout


def test_a_second_server_on_the_same_port_is_refused(supervised, tmp_path, redis):
    """Its workers would bind beside the first one's (same user, SO_REUSEPORT)
    and take half the connections: the supervisor refuses to start instead."""
    first = supervised(PIDREPORT, port=free_port())
    (tmp_path / "second").mkdir()
    config = write_config(tmp_path / "second", PIDREPORT, {
        "port": first.port, "workers": {"workers": 2},
        "bus": {"backend": "redis", "url": redis.url}}, TEST_APPS)
    result = run_twistd(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: cannot listen on 127.0.0.1 port {first.port}: Address already in use"]
    assert first.process.poll() is None


def test_a_service_that_does_not_load_stops_the_start_as_in_one_process(tmp_path, redis):
    config = write_config(tmp_path, {"broken": reactive("/b")}, {
        "workers": {"workers": 2}, "bus": {"backend": "redis", "url": redis.url}}, TEST_APPS)
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


def test_a_worker_that_cannot_be_spawned_is_tried_again_with_backoff(tmp_path, redis):
    config = write_config(tmp_path, PIDREPORT, {
        "workers": {"workers": 2}, "bus": {"backend": "redis", "url": redis.url}}, TEST_APPS)
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
