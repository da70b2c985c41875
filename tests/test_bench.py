"""The benchmark harness runs end to end (``bench/run.py --smoke``): real
lapps and C echo servers under the real load generator. It checks that
numbers come out, never how fast anything is."""

import json
import re
import subprocess
import sys

from conftest import REPO


def test_smoke_run_reports_the_servers_and_the_lua_benchmark_against_both_echoes(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--smoke",
                             "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr

    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| server | msgs/s median (min–max) | server CPU-µs/msg |")
    assert any(row.startswith("| lapps ws ") for row in rows), rows
    assert any(row.startswith("| echosrv ") for row in rows), rows
    assert any(row.startswith("| lapps ws: benchmark.lua → echo.lua") for row in rows), rows
    assert any(row.startswith("| lapps ws: benchmark.lua → nginx") for row in rows), rows

    data = json.loads(out.read_text())
    runs = {run["server"]: run for run in data["runs"]}
    assert set(runs) == {"lapps-ws", "echosrv", "lua-ws", "lua-ws-nginx"}
    for run in runs.values():
        assert run["ok"], run
        assert run["cpu_us_per_msg"] > 0
        assert run["command"]
    for key in ("lapps-ws", "echosrv"):
        run = runs[key]
        assert run["wsbench"]["msgs_per_s"] > 0
        assert run["wsbench"]["connected"] == run["wsbench"]["conns"] == 100
        assert run["wsbench"]["server_cpu"] > 0
        assert run["wsbench_line"].startswith("{")
        assert run["wsbench_command"]
    for key in ("lua-ws", "lua-ws-nginx"):  # etc/benchmark-ws.json: 4 instances × 100
        assert runs[key]["sockets_connected"] == [100] * 4
        assert runs[key]["msgs_per_s"] > 0
    assert runs["lua-ws-nginx"]["echo_command"][0] == "nginx"
    for row in data["summary"]:
        assert row["msgs_per_s_median"] > 0 and row["cpu_us_per_msg_median"] > 0


def test_connection_workload_opens_every_connection_and_reports_its_cost(tmp_path):
    """bench/connections.py --smoke: 200 idle upgrades to lapps and echosrv."""
    out = tmp_path / "connections.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "connections.py"), "--smoke",
                             "--servers", "lapps-ws,lapps-wss,echosrv", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| server | server CPU-µs per handshake |")
    assert [row.split(" |")[0] for row in rows[1:]] == ["| lapps-ws", "| lapps-wss", "| echosrv"]
    data = json.loads(out.read_text())
    for run in data["runs"]:
        assert run["connected"] == run["conns"] == 200 and run["failed"] == 0, run
        assert run["server_cpu_s"] > 0 and run["wall_s"] > 0
    for row in data["table"]:
        assert row["all_connected"] and row["cpu_us_per_handshake"] > 0, row
        assert row["handshakes_per_s"] > 0 and row["kib_per_connection"] > 0


def test_lua_call_times_the_echo_services_call():
    """bench/lua_call.py runs echo.lua's onMessage through the dispatcher
    and ws:send (it checks the call's outcome itself) and reports a time."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "lua_call.py"),
                             "--size", "128", "--number", "1000"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"the Lua call of one 128 B echo: \d+\.\d\d µs \(best of 5 × 1,000\)\n",
                        result.stdout), result.stdout
