"""The benchmark harness runs end to end (``bench/run.py --smoke``): real
lapps and C echo servers under the real load generator. It checks that
numbers come out, that they land in a results file with the machine,
versions and date, and that bench/report.py renders that file as the
README's tables; never how fast anything is."""

import importlib.util
import json
import re
import subprocess
import sys

from conftest import REPO

META_KEYS = {"date", "date_end", "elapsed_s", "command", "argv", "git", "machine",
             "loadavg_start", "loadavg_end", "versions"}


def report():
    """bench/report.py, loaded without touching sys.path (it must have no
    side effect at import)."""
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_meta(meta, command, nginx):
    assert META_KEYS <= set(meta), sorted(meta)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", meta["date"])
    assert meta["command"].startswith(command), meta["command"]
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git"]["commit"])
    assert isinstance(meta["git"]["dirty"], bool)
    assert meta["git"]["commit_at_end"] == meta["git"]["commit"]
    machine = meta["machine"]
    assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["kernel"]
    assert len(meta["loadavg_start"]) == len(meta["loadavg_end"]) == 3
    versions = meta["versions"]
    for key in ("python", "lapps", "twisted", "autobahn", "lupa", "openssl"):
        assert versions[key], key
    assert versions["luajit"].startswith("LuaJIT")
    assert bool(versions.get("nginx")) == nginx


def table_rows(markdown):
    """The rows of each Markdown table (header first), in order."""
    tables = []
    for block in markdown.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("| "):
            assert re.fullmatch(r"\|(-+:?\|)+", lines[1].replace("---", "-")), lines[1]
            tables.append([lines[0]] + lines[2:])
    return tables


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

    assert data["workload"] == "echo"
    check_meta(data["meta"], "python3 bench/run.py --smoke", nginx=True)
    text = report().markdown(out)
    echo, lua = table_rows(text)
    assert echo[0] == "| server | msgs/s median (min–max) | server CPU-µs/msg |"  # no autobahn
    assert [row.split(" | ")[0] for row in echo[1:]] == [
        "| lapps ws (echo.lua)", "| echosrv (C, the ceiling)"]
    assert lua[0].startswith("| LAppS benchmark | msgs/s median (min–max) | CPU-µs/msg")
    assert [row.split(" | ")[0] for row in lua[1:]] == [
        "| ws, echo in the same lapps process", "| ws, echo on nginx"]
    for row in echo[1:] + lua[1:]:
        assert re.search(r" \| [\d,]+ \([\d,]+–[\d,]+\) \| \d+\.\d \|$", row), row
    last = text.rstrip("\n").split("\n\n")[-1]
    assert last.startswith("Measured ") and "\n" not in last
    assert f"commit `{data['meta']['git']['short']}`" in last
    assert data["meta"]["machine"]["cpu_model"] in last and "`python3 bench/run.py --smoke" in last


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
    for row in data["summary"]:
        assert row["all_connected"] and row["cpu_us_per_handshake"] > 0, row
        assert row["handshakes_per_s"] > 0 and row["kib_per_connection"] > 0
    assert data["workload"] == "connections"
    check_meta(data["meta"], "python3 bench/connections.py --smoke", nginx=False)
    (table,) = table_rows(report().markdown(out))
    assert table[0] == ("| server | server CPU-µs per handshake | × nginx-ws | handshakes/s "
                        "| KiB per idle connection |")
    assert [row.split(" |")[0] for row in table[1:]] == ["| lapps-ws", "| lapps-wss", "| echosrv"]
    assert all(row.split(" | ")[2] == "–" for row in table[1:])  # no nginx-ws row to divide by


def test_results_files_are_named_after_the_workload():
    """bench/results/<name>.json: echo for every server, lua-benchmark for the
    lua-* four, echo-<servers> otherwise, --name and --out override."""
    script = """
import json, sys
sys.path.insert(0, "bench")
import connections, run

def shown(args):
    return str(args.out.relative_to(run.REPO) if args.out.is_relative_to(run.REPO) else args.out)

cases = [[], ["--servers", "lua-ws,lua-wss,lua-ws-nginx,lua-wss-nginx"],
         ["--servers", "lapps-ws,nginx-ws"], ["--size", "128"], ["--conns", "400"],
         ["--servers", "lapps-ws,nginx-ws", "--name", "nginx"], ["--smoke"],
         ["--out", "/tmp/x.json", "--name", "ignored"]]
print(json.dumps([shown(run.parse_args(c)) for c in cases]
                 + [shown(connections.parse_args(c))
                    for c in ([], ["--servers", "lapps-ws,nginx-ws"], ["--smoke"])]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "bench/results/echo.json", "bench/results/lua-benchmark.json",
        "bench/results/echo-lapps-ws+nginx-ws.json", "bench/results/echo-128B.json",
        "bench/results/echo-400conns.json", "bench/results/nginx.json",
        "bench/results/smoke.json", "/tmp/x.json",
        "bench/results/connections.json", "bench/results/connections-lapps-ws+nginx-ws.json",
        "bench/results/connections-smoke.json"]


def test_the_committed_results_files_render():
    """Every results file in bench/results/ renders: tables, then the line
    saying how it was measured."""
    module = report()
    files = module.default_files()
    for path in files:
        text = module.markdown(path)
        assert table_rows(text), path
        assert "\nMeasured " in text, path


def test_lua_call_times_the_echo_services_call():
    """bench/lua_call.py runs echo.lua's onMessage through the dispatcher
    and ws:send (it checks the call's outcome itself) and reports a time."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "lua_call.py"),
                             "--size", "128", "--number", "1000"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"the Lua call of one 128 B echo: \d+\.\d\d µs \(best of 5 × 1,000\)\n",
                        result.stdout), result.stdout
