#!/usr/bin/env python3
"""The connection workload: handshakes and idle connections, server by server.

    python3 bench/connections.py [--conns N] [--batch N] [--reps N]
                                 [--servers a,b,...] [--smoke] [--name NAME | --out FILE]

For each server of ``bench/run.py`` it measures (server pinned to one CPU,
this client to the other, as in run.py):

* **handshakes**: ``--conns`` WebSocket upgrades (TLS too for wss), at most
  ``--batch`` in progress at once, each connection kept open: the server's
  CPU over that phase per handshake, and handshakes per wall second;
* **idle connections**: the server's resident memory with all of them open,
  less before, per connection.

Servers are the subset of run.py's that answer a plain upgrade on ``/echo``
(lapps, bare Autobahn, nginx + lua-resty-websocket, echosrv). The client is
asyncio with a canned upgrade request: its own cost is not measured, only
the server's (/proc/<pid>/task/*/schedstat, /proc/<pid>/status). Results go to
bench/results/<name>.json (``connections`` for every server at the defaults;
with "meta": date, commit, command, machine, versions) and bench/report.py's
Markdown table of it to stdout.
"""

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402 -- bench/report.py: the results file as Markdown
import run as bench  # noqa: E402 -- bench/run.py: the servers, processes and CPU accounting

SERVERS = ["lapps-ws", "lapps-wss", "autobahn", "autobahn-wss", "nginx-ws", "nginx-wss",
           "echosrv"]
SMOKE = ["lapps-ws", "echosrv"]
#: lapps's per-peer limits would refuse one client opening thousands of
#: connections a second (they are tested on their own).
UNLIMITED = {"limits": {"peer_connection_rate": 1e6, "peer_connection_burst": 1_000_000,
                        "peer_max_connections": 1_000_000},
             "workers": {"max_connections": 1_000_000}}


def raise_fd_limit(wanted):
    """As many descriptors as ``wanted`` (client and server inherit them), up
    to what the hard limit, or for root the kernel's nr_open, allows."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < wanted and os.geteuid() == 0:
        with open("/proc/sys/fs/nr_open") as f:
            raised = max(hard, min(wanted, int(f.read())))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, raised))
            hard = raised
        except (ValueError, OSError):  # root without CAP_SYS_RESOURCE (a container)
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return min(wanted, hard)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """The CPU time of all of a process's threads, to the nanosecond
    (schedstat; /proc/<pid>/stat counts 10 ms ticks, too coarse for a few
    hundred handshakes)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    return total / 1e9


def upgrade_request(port):
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


async def open_idle(port, tls, count, batch):
    """``count`` upgrades, ``batch`` at a time: the writers of those that got
    101 (kept open), and why the others failed."""
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request, gate, failed, writers = upgrade_request(port), asyncio.Semaphore(batch), [], []

    async def one():
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as e:
                failed.append(type(e).__name__)
                return
            if head.startswith(b"HTTP/1.1 101"):
                writers.append(writer)
            else:
                failed.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(count)))
    return writers, failed


def measure(ctx, procs, server, rep, args):
    port = bench.free_port()
    if server.key.startswith("lapps"):
        argv = bench.lapps_echo_argv(ctx, port, server.tls, extra=UNLIMITED)
    else:
        argv = server.argv(ctx, port)
    with open(ctx.tmp / f"{server.key}-{port}.log", "wb") as out:
        proc = procs.start(ctx.pin(ctx.server_cpu) + argv, stdout=out, stderr=out,
                           cwd=bench.REPO)
    try:
        bench.wait_listening(proc, port)
        time.sleep(0.5)  # past start-up work (Lua loading, TLS context)
        record = {"server": server.key, "rep": rep, "conns": args.conns,
                  "command": ctx.pin(ctx.server_cpu) + argv,
                  "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
        neighbours = bench.Neighbours(proc.pid)
        record.update(asyncio.run(open_and_hold(port, server.tls, args, proc.pid)))
        record.update(neighbours.done())  # over the handshakes and the second after
        return record
    finally:
        procs.stop(proc)


async def open_and_hold(port, tls, args, pid):
    """Open the connections, take the server's CPU and the wall time of that
    phase; after a second (what the last handshakes held is freed), its
    memory with all of them open; then close them."""
    rss, cpu, wall = rss_kib(pid), cpu_seconds(pid), time.monotonic()
    writers, failed = await open_idle(port, tls, args.conns, args.batch)
    cpu, wall = cpu_seconds(pid) - cpu, time.monotonic() - wall
    await asyncio.sleep(1.0)
    rss = rss_kib(pid) - rss
    for writer in writers:
        writer.transport.abort()
    return {"connected": len(writers), "failed": len(failed), "failures": sorted(set(failed))[:5],
            "server_cpu_s": cpu, "wall_s": wall, "rss_kib": rss}


def summarize(runs):
    rows = {}
    for r in runs:
        rows.setdefault(r["server"], []).append(r)
    table = []
    for key, reps in rows.items():
        ok = [r for r in reps if r["connected"] == r["conns"] and not r["failed"]]
        use = ok or reps
        n = [max(1, r["connected"]) for r in use]
        table.append({
            "server": key, "reps": len(use), "all_connected": bool(ok),
            "cpu_us_per_handshake": statistics.median(
                r["server_cpu_s"] / k * 1e6 for r, k in zip(use, n)),
            "handshakes_per_s": statistics.median(k / r["wall_s"] for r, k in zip(use, n)),
            "kib_per_connection": statistics.median(r["rss_kib"] / k for r, k in zip(use, n)),
        })
    return table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="servers: " + ", ".join(SERVERS))
    p.add_argument("--conns", type=int, default=5000, help="connections (default 5000)")
    p.add_argument("--batch", type=int, default=200,
                   help="handshakes in progress at once (default 200)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, interleaved (default 3)")
    p.add_argument("--servers", help="comma-separated subset, in this order")
    p.add_argument("--smoke", action="store_true", help="1 rep of 200 connections, "
                   + " and ".join(SMOKE) + " only")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    p.add_argument("--name", help="results file bench/results/NAME.json (default: connections "
                   "for every server, else connections-<servers>; -<conns>conns, -batch<n> "
                   "when not 5000 and 200; connections-smoke for --smoke)")
    p.add_argument("--out", type=Path, help="results file path (overrides --name)")
    args = p.parse_args(argv)
    if args.smoke:
        args.reps, args.conns = 1, 200
        args.servers = args.servers or ",".join(SMOKE)
    keys = args.servers.split(",") if args.servers else SERVERS
    unknown = [k for k in keys if k not in SERVERS]
    if unknown:
        p.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    known = {s.key: s for s in bench.SERVERS}
    args.selected = [known[k] for k in keys]
    args.out = bench.results_path(args.out, args.name, default_name(args, keys))
    return args


def default_name(args, keys):
    if args.smoke:
        return "connections-smoke"
    name = "connections" if keys == SERVERS else "connections-" + "+".join(keys)
    if args.conns != 5000:
        name += f"-{args.conns}conns"
    if args.batch != 200:
        name += f"-batch{args.batch}"
    return name


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, bench._terminate)
    meta = bench.start_meta("connections.py", argv)
    limit = raise_fd_limit(2 * args.conns + 1000)
    if limit < 2 * args.conns + 100:
        args.conns = (limit - 100) // 2
        bench.log(f"descriptors limited to {limit}: {args.conns} connections")
    procs, runs, notes = bench.Processes(), [], []
    tmp = Path(tempfile.mkdtemp(prefix="lapps-conn-"))
    try:
        _, echosrv = bench.build_loadgen(tmp)
        cpus = bench.pick_cpus(args.no_pin)
        if cpus[1] is not None:
            os.sched_setaffinity(0, {cpus[1]})
        else:
            notes.append("server and client not pinned (fewer than 2 CPUs, no taskset, "
                         "or --no-pin)")
        ctx = bench.Ctx(tmp, None, echosrv, cpus, {})
        servers = []
        for s in args.selected:
            if s.nginx and bench.nginx_peer.install(bench.SHARED):
                notes.append(f"{s.key}: left out (missing "
                             f"{', '.join(bench.nginx_peer.missing(bench.SHARED))})")
            else:
                servers.append(s)
        for rep in range(args.reps):
            for server in servers[rep % len(servers):] + servers[:rep % len(servers)]:
                result = measure(ctx, procs, server, rep, args)
                bench.log(json.dumps({k: v for k, v in result.items() if k != "command"}))
                runs.append(result)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    git = meta["git"]
    if git and git.get("commit") != bench.git_state().get("commit"):
        notes.append(f"the checkout changed during the run ({git['short']} -> "
                     f"{bench.git_state().get('short')}): lapps runs from it")
    meta = bench.finish_meta(meta, bench.stack_versions(nginx=any(s.nginx for s in servers)))
    bench.write_results(args.out, {
        "workload": "connections", "name": args.out.stem, "meta": meta,
        "settings": {"conns": args.conns, "batch": args.batch, "reps": args.reps,
                     "server_cpu": cpus[0], "client_cpu": cpus[1],
                     "servers": [s.key for s in args.selected]},
        "notes": notes, "summary": summarize(runs), "runs": runs})
    print(report.markdown(args.out), end="")
    print(f"\n(results in {bench.display(args.out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
