#!/usr/bin/env python3
"""Worker processes: echo throughput with ``workers.workers`` = 1 and 2, and
the bcast fan-out between the workers of one server, on the host bus and
on the Redis bus.

    python3 bench/workers.py [--buses host,redis] [--workers 1,2] [--conns 100]
                             [--size 1024] [--warmup 2] [--duration 5] [--reps 1]
                             [--generators N] [--subscribers 50] [--messages 1000]

Starts a redis-server on a free loopback port (tests/redis_server.py), then
for each bus and worker count a ``twistd -n lapps`` serving the shipped echo
service (1 instance per worker), unpinned (one worker on the host bus is
one process: the host bus is then the local one), and runs as many
``wsbench`` load generators side by side as there are workers (each with
its share of ``--conns``), since one generator on this machine cannot keep
two Python workers busy. Reported: echoed messages per second (the sum of
the generators) and server CPU-µs per message (utime+stime of the parent
and every worker over the window, as wsbench ``-S`` measures it, per
message). Then, on a 2-worker server on each bus with the fan-out producer
(a standalone service, so in worker 0) and subscribers spread by the
kernel over both workers: broadcasts and deliveries per second, and the
CPU of the bus's carrier (Redis, or the supervisor, whose CPU is also in
lapps's), with the ``bench/bus_fanout.py`` harness. wsbench is built as ``bench/run.py``
builds it. Every process started is stopped by its pid.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

import bus_fanout  # noqa: E402
import run  # noqa: E402
from redis_server import RedisServer  # noqa: E402

APPS = run.REPO / "apps"


class Supervised:
    """A ``twistd -n lapps`` logging JSON lines to a file; ``pids`` are the
    parent's and its workers' once the parent logged ``server.ready``."""

    def __init__(self, procs, directory, config):
        path = directory / "lapps.json"
        path.write_text(json.dumps(config))
        self.log = directory / "out.log"
        with open(self.log, "wb") as out:
            self.process = procs.start(run.twistd() + [
                "-n", "--pidfile=", "--logger", "lapps.logs.json_lines", "lapps",
                "--config", str(path)], stdout=out, stderr=subprocess.STDOUT, cwd=run.REPO)
        ready = self._wait(lambda e: e.get("lapps_event") == "server.ready"
                           and "lapps_worker" not in e)
        self.pid = self.process.pid
        self.pids = [self.pid] + ready.get("pids", [])
        self.port = self._wait(lambda e: e.get("lapps_event") == "listener.up")["port"]

    def _wait(self, matches, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("{") and matches(event := json.loads(line)):
                    return event
            if self.process.poll() is not None:
                sys.exit(f"lapps exited ({self.process.returncode}): see {self.log}")
            time.sleep(0.1)  # polling a log file: there is no event to wait on
        sys.exit(f"lapps not ready after {timeout} s: see {self.log}")


def server_config(workers, port, bus, redis, services):
    """``bus`` "host" is the default with workers: no ``bus`` key."""
    server = {"ip": "127.0.0.1", "port": port, "workers": {"workers": workers}}
    if bus == "redis":
        server["bus"] = {"backend": "redis", "url": redis.url, "prefix": "wbench:"}
    return {"server": server, "directories": {"applications": str(APPS)}, "services": services}


ECHO = {"echo": {"request_target": "/echo", "instances": 1,
                 "max_inbound_message_size": run.LIMIT}}


def echo_run(wsbench, procs, server, generators, args):
    """``generators`` wsbench side by side; (msgs/s, CPU-µs/msg, details)."""
    pids = ",".join(map(str, server.pids))
    conns = [args.conns // generators + (i < args.conns % generators) for i in range(generators)]
    neighbours = run.Neighbours(*server.pids)
    running = [subprocess.Popen(
        [str(wsbench), "-H", "127.0.0.1", "-p", str(server.port), "-u", "/echo", "-c", str(c),
         "-s", str(args.size), "-w", str(args.warmup), "-d", str(args.duration), "-S", pids],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in conns]
    results = []
    for bench in running:
        out, err = bench.communicate(timeout=60 + args.warmup + args.duration)
        line = (out.strip().splitlines() or [""])[-1]
        if bench.returncode != 0 or not line.startswith("{"):
            sys.exit(f"wsbench failed ({bench.returncode}): {err.strip()[-500:]}")
        results.append(json.loads(line))
    rate = sum(r["msgs_per_s"] for r in results)
    # each generator measured the same server pids over (nearly) the same window
    cores = statistics.mean(r["server_cpu"] for r in results)
    return rate, cores / rate * 1e6, {"server_cores": cores, **neighbours.done()}


def fanout(procs, tmp, bus, redis, args):
    """bus_fanout's measurement on one 2-worker server on ``bus``: the
    producer in worker 0, ``2 × --subscribers`` clients spread over both
    workers."""
    apps = tmp / "fanout-apps"
    for name, source in (("fanout_producer", bus_fanout.PRODUCER),
                         ("fanout_subscriber", bus_fanout.SUBSCRIBER)):
        (apps / name).mkdir(parents=True, exist_ok=True)
        (apps / name / f"{name}.lua").write_text(source)
    config = server_config(2, 0, bus, redis, {
        "fanout_producer": {"standalone": True, "preload": ["mqr", "nap"],
                            "settings": {"channel": 1, "size": args.fanout_size}},
        "fanout_subscriber": {"request_target": "/fanout", "protocol": "LAppS",
                              "preload": ["mqr"]}})
    config["directories"]["applications"] = str(apps)
    directory = tmp / f"fanout-{bus}"
    directory.mkdir()
    server = Supervised(procs, directory, config)
    try:
        # bus_fanout.bench: hosts[0] is the producer's, hosts[1:] get the subscribers;
        # here every "host" is one process of the same server, on the same port
        hosts = [SimpleNamespace(port=server.port, process=SimpleNamespace(pid=pid))
                 for pid in server.pids]
        options = SimpleNamespace(subscribers=args.subscribers, messages=args.messages,
                                  reps=args.reps)
        carrier = redis.process.pid if bus == "redis" else server.pid
        return asyncio.run(bus_fanout.bench(options, hosts, carrier)), \
            args.subscribers * (len(hosts) - 1)
    finally:
        procs.stop(server.process)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buses", default="host,redis", help="buses, in this order")
    parser.add_argument("--workers", default="1,2", help="worker counts, in this order")
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--reps", type=int, default=1, help="repetitions of each measurement")
    parser.add_argument("--generators", type=int, default=0,
                        help="wsbench processes side by side (default: one per worker)")
    parser.add_argument("--subscribers", type=int, default=50,
                        help="fan-out clients per worker (the kernel spreads them)")
    parser.add_argument("--messages", type=int, default=1000, help="broadcasts per repetition")
    parser.add_argument("--fanout-size", type=int, default=128, help="bytes per broadcast")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    buses, counts = args.buses.split(","), [int(n) for n in args.workers.split(",")]
    procs = run.Processes()
    with tempfile.TemporaryDirectory(prefix="lapps-workers-bench-") as tmp:
        tmp = Path(tmp)
        wsbench, _ = run.build_loadgen(tmp)
        redis = RedisServer(tmp).start()
        rows, fanouts = [], {}
        try:
            for rep in range(args.reps):
                for bus in buses:
                    for workers in counts:
                        directory = tmp / f"echo-{bus}-{workers}-{rep}"
                        directory.mkdir()
                        server = Supervised(procs, directory, server_config(
                            workers, run.free_port(), bus, redis, ECHO))
                        try:
                            rate, cpu, more = echo_run(wsbench, procs, server,
                                                       args.generators or workers, args)
                        finally:
                            procs.stop(server.process)
                        rows.append((bus, workers, rate, cpu, more, args.generators or workers))
                        run.log(f"{bus} workers={workers} rep {rep + 1}: {rate:,.0f} msgs/s, "
                                f"{cpu:.1f} CPU-µs/msg, {more}")
            for bus in buses:
                fanouts[bus] = fanout(procs, tmp, bus, redis, args)
        finally:
            redis.stop()
    print(f"echo, {args.conns} connections, {args.size} B, {args.duration:g} s window, "
          f"unpinned, load average at end {os.getloadavg()[0]:.2f}; median of {args.reps}:\n")
    print("| bus | workers | wsbench | msgs/s | server CPU-µs/msg | server CPU (cores) "
          "| neighbours' CPU (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for bus in buses:
        for workers in counts:
            mine = [r for r in rows if r[:2] == (bus, workers)]
            print(f"| {bus} | {workers} | {mine[0][5]} "
                  f"| {statistics.median(r[2] for r in mine):,.0f} "
                  f"| {statistics.median(r[3] for r in mine):.1f} "
                  f"| {statistics.median(r[4]['server_cores'] for r in mine):.2f} "
                  f"| {statistics.median(r[4]['other_cpu'] for r in mine):.2f} |")
    clients = next(iter(fanouts.values()))[1]
    print(f"\nbcast fan-out between the processes of a 2-worker server: {clients} subscribers, "
          f"{args.messages} broadcasts of {args.fanout_size} B (carrier: Redis, or the "
          f"supervisor, which lapps's CPU includes):\n")
    print("| bus | broadcasts/s | deliveries/s | lapps CPU-µs/delivery "
          "| carrier CPU-µs/delivery |")
    print("|---|---:|---:|---:|---:|")
    for bus, (fanout_rows, _) in fanouts.items():
        print(f"| {bus} | " + " | ".join(f"{statistics.median(column):,.1f}"
                                          for column in list(zip(*fanout_rows))[:4]) + " |")


if __name__ == "__main__":
    main()
