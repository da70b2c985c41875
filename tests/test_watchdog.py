"""The watchdog (``lapps.watchdog``): a Lua call stuck inside a C function
(``pidreport``'s "stall in C", a pattern match that does not end) holds the
reactor where ``handler_timeout``'s hook cannot stop it. One process exits
with status 70 and a last line naming the call; with workers the stuck
worker is replaced while the other serves on; SIGTERM ends the process
within ``shutdown_timeout`` + 3 s even then; and a worker frozen silent
(SIGSTOP) is killed by its supervisor and started again."""

import asyncio
import json
import os
import signal

import websockets

from conftest import TEST_APPS, reactive
from support.workers import all_exit_within, pid_of_new_connection

EXIT_STALLED = 70
PIDREPORT = {"pidreport": reactive("/pid", instances=2, handler_timeout=1)}


async def stall_one(server):
    """A client that makes its instance stall, and what it then sees."""
    ws = await websockets.connect(server.url("/pid"))
    await ws.send("?")
    pid = int(await ws.recv())
    await ws.send("stall in C")
    await asyncio.wait_for(ws.wait_closed(), 30)
    return pid, ws.close_code


def test_one_process_stuck_in_c_exits_70_naming_the_call(start_server):
    server = start_server(PIDREPORT, {"limits": {"stall_timeout": 1}}, TEST_APPS)
    pid, close_code = asyncio.run(stall_one(server))
    assert pid == server.process.pid
    assert close_code == 1006  # no close frame: the process is gone
    assert server.stop() == EXIT_STALLED
    server.wait_for(r"\[lapps\.watchdog#critical\] pidreport\[\d\]\.onMessage \(handler 1\) "
                    r"has held the reactor for [\d.]+ s \(handler_timeout \+ stall_timeout = 2 "
                    r"s\), inside a C function .* exits with status 70 to be restarted")
    assert server.count("Traceback|Unhandled") == 0


def test_sigterm_ends_a_process_stuck_in_c_within_its_bound(start_server):
    """handler_timeout 60: the stall check would come too late; the stop
    may take shutdown_timeout (1 s) + 3 s, and the process is gone in time."""
    server = start_server({"pidreport": reactive("/pid", handler_timeout=60)},
                          {"shutdown_timeout": 1}, TEST_APPS)

    async def stuck_then_terminated():
        ws = await websockets.connect(server.url("/pid"))
        await ws.send("?")
        await ws.recv()
        await ws.send("stall in C")
        await ws.send("?")  # queued behind the stall: no answer comes
        with_answer = asyncio.ensure_future(ws.recv())
        done, _ = await asyncio.wait([with_answer], timeout=0.5)
        assert not done
        with_answer.cancel()
        server.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(all_exit_within, [server.process.pid], 1 + 3 + 2)

    assert asyncio.run(stuck_then_terminated())
    assert server.stop() == EXIT_STALLED
    server.wait_for(r"the stop did not end 4\.0 s after SIGTERM \(shutdown_timeout 1 s\) "
                    r"while pidreport\[0\]\.onMessage holds the reactor; the process exits "
                    r"with status 70")


def test_a_stuck_worker_is_replaced_while_the_other_serves_on(supervised):  # noqa: F811
    server = supervised(PIDREPORT, limits={"stall_timeout": 1})
    old = server.worker_pids()

    async def scenario():
        clients = {}
        while set(clients) != set(old.values()):  # a client on each worker
            ws = await websockets.connect(server.url("/pid"))
            await ws.send("?")
            clients.setdefault(int(await ws.recv()), ws)
        stuck_pid, close_code = await stall_one_of(clients[old[1]])
        survivor = clients[old[0]]
        await survivor.send("still there?")
        assert int(await survivor.recv()) == old[0]
        return stuck_pid, close_code

    async def stall_one_of(ws):
        await ws.send("stall in C")
        await asyncio.wait_for(ws.wait_closed(), 30)
        return old[1], ws.close_code

    assert asyncio.run(scenario()) == (old[1], 1006)
    stalled = server.wait_event("lua.stalled", lapps_worker=1)
    assert (stalled["service"], stalled["callback"]) == ("pidreport", "onMessage")
    assert server.wait_event("worker.exit", pid=old[1])["exit_code"] == EXIT_STALLED
    new = server.wait_event("worker.start", index=1, restarts=1)["pid"]
    server.wait_event("server.ready", lapps_worker=1, lapps_worker_pid=new)

    async def until_the_new_worker_answers():
        seen = set()
        while new not in seen:
            seen.add(await pid_of_new_connection(server))
        return seen

    assert asyncio.run(asyncio.wait_for(until_the_new_worker_answers(), 20)) <= {old[0], new}
    assert server.count("Traceback") == 0


def test_a_worker_frozen_silent_is_killed_and_started_again(supervised):  # noqa: F811
    """SIGSTOP: not even its watchdog runs. Silent past handler_timeout (1 s)
    + stall_timeout (1 s) + 3 s, it gets SIGKILL from the supervisor."""
    server = supervised(PIDREPORT, limits={"stall_timeout": 1})
    old = server.worker_pids()
    os.kill(old[1], signal.SIGSTOP)
    unresponsive = server.wait_event("worker.unresponsive", index=1)
    assert (unresponsive["pid"], unresponsive["limit"]) == (old[1], 5.0)
    ended = server.wait_event("worker.exit", pid=old[1])
    assert (ended["exit_code"], ended["signal"]) == (None, "SIGKILL")
    new = server.wait_event("worker.start", index=1, restarts=1)["pid"]
    server.wait_event("server.ready", lapps_worker=1, lapps_worker_pid=new)
    assert server.worker_pids()[0] == old[0]
    assert not server.events("worker.unresponsive", index=0)


def test_stall_timeout_0_turns_the_check_off(tmp_path):
    from lapps import config as configuration
    from lapps.workers.supervisor import silence_limit
    path = tmp_path / "lapps.json"
    path.write_text(json.dumps({"server": {"limits": {"stall_timeout": 0}}, "services": {}}))
    assert silence_limit(configuration.load(str(path))) is None
