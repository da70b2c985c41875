#!/usr/bin/env python3
"""Cross-process bcast fan-out through Redis.

    python3 bench/bus_fanout.py [--hosts 2] [--subscribers 50] [--messages 2000]
                                [--size 128] [--reps 3]

Starts a redis-server (Debian's; no persistence) on a free loopback port, one
lapps host with a standalone producer and ``--hosts`` lapps hosts with a
LAppS-protocol service whose clients subscribe, all ``twistd -n lapps``
processes on the Redis bus. ``--subscribers`` WebSocket clients per host
subscribe to one channel; the producer, told to go through an mqr queue,
sends ``--messages`` broadcasts of ``--size`` bytes as fast as the bus takes
them (a send the bus refuses is retried after 1 ms). Reported per
repetition: broadcasts per second end to end (from the go to the last
delivery on the last client), deliveries per second (broadcasts times
subscribers), and CPU per delivery of the lapps processes, of Redis and of
the clients (which run in this process, on the same machine). Every process
started is stopped by its pid.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2
import websockets

REPO = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).parent / "twistd")
TICKS = os.sysconf("SC_CLK_TCK")

PRODUCER = """
fanout_producer = {}
function fanout_producer.init() assert(bcast:create(settings.channel)) end
function fanout_producer.run()
  local sleeper, go = nap:new(), mqr.create("go")
  while not must_stop() do
    local count = go:recv()
    if count == nil then return end
    local message = nljson.decode('{"cid":7,"message":[0,""]}')
    local text = string.rep("x", settings.size)
    for i = 1, count do
      message.message = { i, text }
      while not bcast:send(settings.channel, message) do sleeper:usleep(1000) end
    end
  end
end
return fanout_producer
"""

SUBSCRIBER = """
fanout_subscriber = {}
function fanout_subscriber.onStart() end
function fanout_subscriber.onMessage(handler, msg_type, message)
  local result
  if message.method == "subscribe" then
    result = bcast:subscribe(message.params[1], handler)
  else
    result = mqr.create("go"):post(message.params[1])
  end
  return ws:send(handler, { cid = 0, status = 1, result = { result } })
end
function fanout_subscriber.onDisconnect(handler) end
function fanout_subscriber.onShutdown() end
return fanout_subscriber
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Host:
    """A ``twistd -n lapps`` process; ``port`` once it listens."""

    def __init__(self, directory, services, url):
        directory.mkdir()
        config = {"server": {"ip": "127.0.0.1", "port": 0,
                             "bus": {"backend": "redis", "url": url, "prefix": "bench:"}},
                  "directories": {"applications": str(directory.parent / "apps")},
                  "services": services}
        (directory / "lapps.json").write_text(json.dumps(config))
        self.log = open(directory / "out.log", "w+")
        self.process = subprocess.Popen([TWISTD, "-n", "--pidfile=", "lapps", "--config",
                                         str(directory / "lapps.json")],
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        self.port = int(self.wait_for("listening on ").rsplit(":", 1)[1].rstrip(")\n"))
        self.wait_for("bus available")

    def wait_for(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.seek(0)
            for line in self.log:
                if text in line:
                    return line
            if self.process.poll() is not None:
                sys.exit(f"a lapps host exited: see {self.log.name}")
            time.sleep(0.1)
        sys.exit(f"a lapps host did not log {text!r} within {timeout} s")

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def call(method, *params):
    return cbor2.dumps({"lapps": 1, "method": method, "params": list(params)})


async def subscribe(port):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/fanout", max_size=None)
    await ws.send(call("subscribe", 1))
    assert cbor2.loads(await ws.recv())["result"] == [True]
    return ws


async def receive(ws, count):
    for _ in range(count):
        await ws.recv()
    return time.monotonic()


async def one_run(clients, control, messages, pids):
    before = {pid: cpu_seconds(pid) for pid in pids}
    client_cpu = time.process_time()
    started = time.monotonic()
    await control.send(call("go", messages))
    ended = max(await asyncio.gather(*[receive(ws, messages) for ws in clients]))
    await control.recv()  # the reply to "go"
    elapsed = ended - started
    cpu = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
    return elapsed, cpu, time.process_time() - client_cpu


async def bench(args, hosts, redis_pid):
    clients = [await subscribe(host.port) for host in hosts[1:] for _ in range(args.subscribers)]
    control = await websockets.connect(f"ws://127.0.0.1:{hosts[1].port}/fanout")
    lapps_pids = [h.process.pid for h in hosts]
    deliveries = args.messages * len(clients)
    rows = []
    for rep in range(args.reps):
        elapsed, cpu, client_cpu = await one_run(clients, control, args.messages,
                                                 lapps_pids + [redis_pid])
        lapps_cpu = sum(cpu[pid] for pid in lapps_pids)
        rows.append((args.messages / elapsed, deliveries / elapsed,
                     lapps_cpu / deliveries * 1e6, cpu[redis_pid] / deliveries * 1e6,
                     client_cpu / deliveries * 1e6))
        print(f"rep {rep + 1}: {rows[-1][0]:,.0f} broadcasts/s, {rows[-1][1]:,.0f} deliveries/s",
              file=sys.stderr)
    for ws in clients + [control]:
        await ws.close()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=2, help="subscribing lapps hosts")
    parser.add_argument("--subscribers", type=int, default=50, help="clients per host")
    parser.add_argument("--messages", type=int, default=2000, help="broadcasts per repetition")
    parser.add_argument("--size", type=int, default=128, help="text bytes per broadcast")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="lapps-bus-bench-") as tmp:
        tmp = Path(tmp)
        for name, source in (("fanout_producer", PRODUCER), ("fanout_subscriber", SUBSCRIBER)):
            (tmp / "apps" / name).mkdir(parents=True)
            (tmp / "apps" / name / f"{name}.lua").write_text(source)
        port = free_port()
        redis = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hosts = []
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                 text=True).stdout.strip() != "PONG":
                if time.monotonic() > deadline:
                    sys.exit("redis-server did not start")
                time.sleep(0.05)
            hosts.append(Host(tmp / "producer", {"fanout_producer": {
                "standalone": True, "preload": ["mqr", "nap"],
                "settings": {"channel": 1, "size": args.size}}}, url))
            for i in range(args.hosts):
                hosts.append(Host(tmp / f"host{i}", {"fanout_subscriber": {
                    "request_target": "/fanout", "protocol": "LAppS", "preload": ["mqr"]}}, url))
            rows = asyncio.run(bench(args, hosts, redis.pid))
        finally:
            for host in hosts:
                host.stop()
            os.kill(redis.pid, signal.SIGTERM)
            redis.wait(20)
    print(f"{args.hosts} subscribing hosts x {args.subscribers} clients, {args.messages} "
          f"broadcasts of {args.size} B, {args.reps} repetitions (median, min-max):\n")
    print("| broadcasts/s | deliveries/s | lapps CPU-µs/delivery | Redis CPU-µs/delivery "
          "| client CPU-µs/delivery |\n|---:|---:|---:|---:|---:|")
    cells = []
    for column in zip(*rows):
        cells.append(f"{statistics.median(column):,.1f} ({min(column):,.1f}–{max(column):,.1f})")
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
