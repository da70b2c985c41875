#!/usr/bin/env python3
"""Where a server's CPU goes per message: py-spy samples it under wsbench.

    python3 bench/profile.py [--server lapps-ws] [--size 1024] [--conns 100]
                             [--duration 8] [--top 25] [--config-extra JSON]

Starts one server of bench/run.py (pinned to the first CPU, wsbench to the
second, as there), samples it with py-spy (installed in bench/.venv on first
use) for ``--duration`` seconds while wsbench drives it, and prints the
functions with the most samples: by self time (where the CPU is spent) and
by total time (what it is spent under), preceded by the share of the
server's CPU spent in user space and in the kernel (``/proc``, over the
sampling window).
Idle time (waiting in epoll) is not sampled. ``--config-extra '{"fast_path":
false}'`` adds server keys to the lapps config, to profile the same server
with the fast path off.
"""

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: the servers and the load generator)


def py_spy():
    exe = bench.VENV / "bin" / "py-spy"
    if not exe.exists():
        bench.ensure_venv([])
        subprocess.run([str(bench.venv_python()), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "py-spy"], check=True)
    return exe


def frames(line):
    """A py-spy raw line ``a;b;c N`` → (frames outermost first, samples)."""
    stack, _, count = line.rpartition(" ")
    return [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")"
            if " (" in f else f for f in stack.split(";")], int(count)


def summarize(raw, top):
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = frames(line)
        samples += count
        own[stack[-1]] += count
        for frame in set(stack):
            total[frame] += count
    lines = [f"{samples} samples"]
    for title, counter in (("self", own), ("total", total)):
        lines.append(f"\n{title}:")
        lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="lapps-ws",
                   choices=[s.key for s in bench.SERVERS if s.kind == "wsbench"])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--config-extra", type=json.loads, default={},
                   help="server keys added to the lapps config (JSON object)")
    args = p.parse_args()
    spy = py_spy()
    procs = bench.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lapps-profile-"))
    try:
        wsbench, echosrv = bench.build_loadgen(tmp)
        ctx = bench.Ctx(tmp, wsbench, echosrv, bench.pick_cpus(False), {})
        server = next(s for s in bench.SERVERS if s.key == args.server)
        port = bench.free_port()
        argv = server.argv(ctx, port)
        if args.config_extra and server.key.startswith("lapps"):
            config = Path(argv[argv.index("--config") + 1])
            data = json.loads(config.read_text())
            data["server"].update(args.config_extra)
            config.write_text(json.dumps(data))
        proc = procs.start(ctx.pin(ctx.server_cpu) + argv, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, cwd=bench.REPO)
        bench.wait_listening(proc, port, what=server.key)
        load = procs.start(ctx.pin(ctx.client_cpu) + [
            str(wsbench), "-H", "127.0.0.1", "-p", str(port), "-u", server.path,
            "-c", str(args.conns), "-s", str(args.size), "-w", "1",
            "-d", str(args.duration + 3), "-S", str(proc.pid)] + (["-t"] if server.tls else []),
            stdout=subprocess.PIPE, text=True)
        raw = tmp / "raw.txt"
        user_before, system_before = bench.cpu_times(proc.pid)
        subprocess.run([str(spy), "record", "--pid", str(proc.pid), "--duration",
                        str(int(args.duration)), "--rate", "250", "--format", "raw",
                        "--nonblocking", "--output", str(raw)],
                       check=True, capture_output=True)
        user_after, system_after = bench.cpu_times(proc.pid)
        user, system = user_after - user_before, system_after - system_before
        result = json.loads(load.communicate(timeout=60)[0].strip().splitlines()[-1])
        rate, cpu = result["msgs_per_s"], result["server_cpu"]
        print(f"{server.key}, {args.conns} × {args.size} B: {rate:,.0f} msgs/s, "
              f"{cpu / rate * 1e6:.1f} server CPU-µs/msg (sampled, so a little more), "
              f"{100 * user / (user + system):.0f} % of it in user space, "
              f"{100 * system / (user + system):.0f} % in the kernel")
        print(summarize(raw, args.top))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
