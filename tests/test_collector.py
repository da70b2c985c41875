"""A process lapps owns freezes what start-up made once the server is
ready (lapps/collector.py), one worker process as much as one server."""

import gc
import json

from conftest import reactive


def test_a_ready_server_has_frozen_its_start_up(start_server):
    server = start_server({"echo": reactive("/echo")})
    match = server.wait_for(r"garbage collector: (\d+) objects of start-up frozen")
    assert int(match.group(1)) > 10_000


def test_each_worker_and_the_supervisor_freeze_their_own(supervised):
    server = supervised({"echo": reactive("/echo")})
    server.wait_for(r'"lapps_event": "collector.frozen"', count=3, timeout=30)
    frozen = [json.loads(line) for line in server.lines if '"collector.frozen"' in line]
    assert sorted(str(event.get("lapps_worker", "supervisor")) for event in frozen) == \
        ["0", "1", "supervisor"]
    assert all(event["count"] > 10_000 for event in frozen)
    assert gc.get_freeze_count() == 0  # (the test process's own collector is not touched)
