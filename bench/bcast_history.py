#!/usr/bin/env python3
"""What a bcast send costs on a history channel against a plain one.

    python3 bench/bcast_history.py [--reps 3] [--messages 20000] [--size 128]
                                   [--backends local,redis] [--name NAME | --out FILE]

For each backend (``local``: the in-process bus; ``redis``: the Redis bus,
with a redis-server of its own, no persistence, on a free loopback port)
starts one ``twistd -n lapps`` running the LAppS-protocol test service
``tests/apps/lhistory`` (one reactive instance), creates channel 1 plain and
channel 2 with ``history_size = 1000``, and subscribes nobody, so that the
send itself is what is measured. Then, ``--reps`` times, plain and history
interleaved (the order swapped each repetition), one ``publish`` request
makes ``--messages`` sends of ``{cid = 7, message = {i, text}}`` with a text
of ``--size`` bytes, and the answer comes back. Measured around the request:
the wall time, and the CPU seconds (utime + stime from /proc) of the lapps
process and of redis-server; after the answer both are polled until their
counters stop moving (two reads 50 ms apart), since plain PUBLISHes go to
Redis fire-and-forget. A warm-up request of each kind comes first.

Reported per backend and kind: sends/s and CPU-µs per send (lapps, Redis,
total), medians over the repetitions, and history / plain. The results go
to bench/results/bcast-history.json (with bench/run.py's "meta"), a
Markdown table to stdout. Every process started is stopped by its pid.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 -- bench/run.py: processes, CPU accounting, the results file

TEST_APPS = bench.REPO / "tests" / "apps"
PLAIN, HISTORY = 1, 2
HISTORY_SIZE = 1000
KINDS = {"plain": PLAIN, "history": HISTORY}
BACKENDS = ["local", "redis"]
TICKS = os.sysconf("SC_CLK_TCK")
SETTLE = 0.05  # seconds between two /proc reads that must agree
SERVICE = {"lhistory": {"standalone": False, "auto_start": True, "instances": 1,
                        "protocol": "LAppS", "request_target": "/lhistory",
                        # one request makes every send: it must not be stopped
                        "handler_timeout": 600,
                        "max_inbound_message_size": bench.LIMIT}}


def call(method, *params):
    """A LAppS request, CBOR-encoded (as tests/conftest.py's ``call``)."""
    return cbor2.dumps({"lapps": 1, "method": method, "params": list(params)})


def settled(pids):
    """CPU seconds of ``pids`` once two reads SETTLE apart agree (at most 5 s)."""
    last = {pid: bench.cpu_seconds(pid) for pid in pids}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(SETTLE)
        now = {pid: bench.cpu_seconds(pid) for pid in pids}
        if now == last:
            break
        last = now
    return last


class Backend:
    """One lapps host (and for redis its redis-server), started by ``procs``."""

    def __init__(self, procs, tmp, name):
        self.name, self.redis, self.pids = name, None, []
        server = {"ip": "127.0.0.1", "port": bench.free_port()}
        if name == "redis":
            port = bench.free_port()
            self.redis = procs.start([shutil.which("redis-server"), "--port", str(port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", str(tmp), "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            bench.wait_listening(self.redis, port, what="redis-server")
            server["bus"] = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0",
                             "prefix": "hbench:"}
        path = tmp / f"lapps-{name}.json"
        path.write_text(json.dumps({"server": server,
                                    "directories": {"applications": str(TEST_APPS)},
                                    "services": SERVICE}, indent=2))
        self.log = tmp / f"lapps-{name}.log"
        self.command = bench.twistd() + ["-n", "--pidfile=", "lapps", "--config", str(path)]
        with open(self.log, "wb") as out:
            self.process = procs.start(self.command, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=bench.REPO)
        bench.wait_listening(self.process, server["port"], what=f"lapps ({name})")
        self.wait_for("lapps ready: ")
        if self.redis:
            self.wait_for("bus available")
        self.url = f"ws://127.0.0.1:{server['port']}/lhistory"
        self.pids = [self.process.pid] + ([self.redis.pid] if self.redis else [])

    def wait_for(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lapps ({self.name}) did not log {text!r}:\n"
                                   + bench.tail(self.log))
            time.sleep(0.1)  # polling a log file: there is no event to wait on


async def request(ws, method, *params):
    await ws.send(call(method, *params))
    return cbor2.loads(await ws.recv())["result"]


async def publish(ws, backend, kind, messages, text):
    """One ``publish`` request of ``messages`` sends: the run's record."""
    pids = backend.pids
    before = settled(pids)
    started = time.monotonic()
    result = await request(ws, "publish", KINDS[kind], messages, text)
    wall = time.monotonic() - started
    after = settled(pids)
    cpu = {pid: after[pid] - before[pid] for pid in pids}
    record = {"backend": backend.name, "kind": kind, "messages": messages,
              "wall_s": round(wall, 4), "ok": result[0] is True,
              "lapps_cpu_s": round(cpu[backend.process.pid], 3),
              "redis_cpu_s": round(cpu[backend.redis.pid], 3) if backend.redis else 0.0}
    if not record["ok"]:
        record["error"] = f"send {result[2]} refused: {result[1]}"
        return record
    offsets = result[1]
    numbered = all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    record["offsets"] = [offsets[0], offsets[-1]] if numbered else None
    if kind == "history" and not numbered:
        record.update(ok=False, error="bcast:send on a history channel returned no offset")
    elif kind == "plain" and any(o is not False for o in offsets):
        record.update(ok=False, error="bcast:send on a plain channel returned an offset")
    record["sends_per_s"] = round(messages / wall, 1)
    for what in ("lapps", "redis"):
        record[f"{what}_cpu_us_per_send"] = round(record[f"{what}_cpu_s"] / messages * 1e6, 3)
    record["total_cpu_us_per_send"] = round(
        record["lapps_cpu_us_per_send"] + record["redis_cpu_us_per_send"], 3)
    return record


async def measure(backend, args):
    """Creates the channels, warms up, then the interleaved repetitions."""
    text = "x" * args.size
    async with websockets.connect(backend.url, max_size=None) as ws:
        for channel, size in ((PLAIN, None), (HISTORY, HISTORY_SIZE)):
            created = await request(ws, "create", *([channel] + ([size] if size else [])))
            if created[0] is not True:
                raise RuntimeError(f"bcast:create({channel}) on {backend.name}: {created}")
        for kind in KINDS:  # warm-up, not kept
            warm = await publish(ws, backend, kind, max(1, args.messages // 10), text)
            if not warm["ok"]:
                return [dict(warm, warmup=True)]
        runs = []
        for rep in range(args.reps):
            for kind in (list(KINDS) if rep % 2 == 0 else list(KINDS)[::-1]):
                record = dict(await publish(ws, backend, kind, args.messages, text), rep=rep)
                runs.append(record)
                bench.log(f"{backend.name} {kind:<7} rep {rep + 1}/{args.reps}: " + (
                    f"{record['sends_per_s']:>10,.0f} sends/s, lapps "
                    f"{record['lapps_cpu_us_per_send']:.2f} + redis "
                    f"{record['redis_cpu_us_per_send']:.2f} CPU-µs/send" if record["ok"]
                    else f"FAILED: {record['error']}"))
                if not record["ok"]:
                    return runs
        return runs


COLUMNS = ["sends_per_s", "lapps_cpu_us_per_send", "redis_cpu_us_per_send",
           "total_cpu_us_per_send"]


def summarize(runs, backends, messages):
    """Medians per backend and kind, and history / plain; a CPU ratio whose
    plain figure is under 5 clock ticks per request is left out (None)."""
    floor = 5 / TICKS / messages * 1e6
    rows = []
    for backend in backends:
        medians = {}
        for kind in KINDS:
            mine = [r for r in runs if r["backend"] == backend and r["kind"] == kind and r["ok"]]
            if mine:
                medians[kind] = {c: statistics.median(r[c] for r in mine) for c in COLUMNS}
                rows.append({"backend": backend, "kind": kind, "reps": len(mine),
                             **{c: round(v, 3) for c, v in medians[kind].items()}})
        if len(medians) == 2:
            plain, history = medians["plain"], medians["history"]
            rows.append({"backend": backend, "kind": "history / plain", **{
                c: round(history[c] / plain[c], 2)
                if plain[c] and (c == "sends_per_s" or plain[c] >= floor) else None
                for c in COLUMNS}})
    return rows


def table(rows):
    lines = ["| backend | channel | sends/s | lapps CPU-µs/send | Redis CPU-µs/send "
             "| total CPU-µs/send |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        ratio = row["kind"] == "history / plain"
        cells = [("—" if row[c] is None else f"{row[c]:.2f}×") if ratio
                 else (f"{row[c]:,.0f}" if c == "sends_per_s" else f"{row[c]:.2f}")
                 for c in COLUMNS]
        lines.append(f"| {row['backend']} | {row['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions of each kind (default 3)")
    p.add_argument("--messages", type=int, default=20000, help="sends per request (default 20000)")
    p.add_argument("--size", type=int, default=128, help="text bytes per send (default 128)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="local,redis (default both)")
    p.add_argument("--name", default="bcast-history", help="bench/results/NAME.json")
    p.add_argument("--out", type=Path, help="results file path (overrides --name)")
    args = p.parse_args(argv)
    args.backends = args.backends.split(",")
    if not set(args.backends) <= set(BACKENDS):
        p.error(f"backends are {', '.join(BACKENDS)}")
    args.out = args.out or bench.BENCH / "results" / f"{args.name}.json"
    return args


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, bench._terminate)
    meta = bench.start_meta("bcast_history.py", argv)
    notes = [f"No subscriber: the cost of bcast:send itself, {args.messages} sends of a "
             f"{args.size}-byte text per request, in one reactive instance of "
             "tests/apps/lhistory; the history channel keeps history_size = "
             f"{HISTORY_SIZE}. CPU per send includes the request and its answer (an array of "
             f"{args.messages} offsets, false on the plain channel), spread over the sends.",
             "On the Redis bus a send on a history channel waits for Redis's answer (the "
             "offset): the reactive instance suspends for the round trip, so its sends/s is "
             "bounded by the loopback round trip to Redis, not by CPU; a plain send is a "
             "fire-and-forget PUBLISH.",
             f"CPU is counted in /proc's clock ticks ({1000 / TICKS:g} ms): "
             f"{1e6 / TICKS / args.messages:.2f} CPU-µs per send at {args.messages} sends; "
             "a ratio whose plain figure is under 5 ticks is shown as —."]
    procs = bench.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lapps-bcast-history-"))
    runs, backends, commands = [], [], {}
    try:
        for name in args.backends:
            if name == "redis" and not shutil.which("redis-server"):
                notes.append("redis: skipped, redis-server is not installed "
                             "(apt-get install redis-server)")
                continue
            try:
                backend = Backend(procs, tmp, name)
            except RuntimeError as e:
                notes.append(f"{name}: skipped, lapps did not start: {e}")
                continue
            commands[name] = backend.command
            try:
                mine = asyncio.run(measure(backend, args))
            finally:
                procs.stop(backend.process)
                if backend.redis:
                    procs.stop(backend.redis)
            runs += mine
            failed = [r for r in mine if not r["ok"]]
            if failed:
                notes.append(f"{name}: skipped, {failed[0]['kind']} "
                             f"{'warm-up' if failed[0].get('warmup') else 'run'} failed: "
                             f"{failed[0]['error']}")
            else:
                backends.append(name)
        rows = summarize(runs, backends, args.messages)
        meta = bench.finish_meta(meta, bench.stack_versions())
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                       text=True).stdout.strip() if shutil.which(
                                           "redis-server") else None
        meta["versions"]["redis"] = redis_version
        info = meta["machine"]
        print(f"{args.messages} bcast sends of {args.size} B per request, no subscriber, "
              f"{args.reps} repetitions interleaved (median); {info['cpu_count']} CPUs, "
              f"{info['cpu_model']}, load {meta['loadavg_start'][0]:.2f} at start.\n")
        print(table(rows))
        for note in notes:
            print(f"\nNote: {note}")
        bench.write_results(args.out, {
            "workload": "bcast-history", "name": args.out.stem, "meta": meta,
            "settings": {"reps": args.reps, "messages": args.messages, "size": args.size,
                         "history_size": HISTORY_SIZE, "backends": args.backends,
                         "commands": commands},
            "notes": notes, "summary": rows, "runs": runs})
        print(f"\n(results in {bench.display(args.out)})")
        return 0 if backends == args.backends else 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
