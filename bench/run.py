#!/usr/bin/env python3
"""The lapps benchmark: echo servers under wsbench, interleaved repetitions.

    python3 bench/run.py [--reps N] [--warmup S] [--duration S] [--size BYTES]
                         [--conns N] [--servers a,b,...] [--smoke]
                         [--name NAME | --out FILE]

Builds wsbench and echosrv from $LAPPS_SHARED/tools/loadgen (default
REPO/../shared) in a temporary folder, installs the peer servers in
bench/.venv, runs every server in turn (order rotated each repetition) with
the server pinned to one CPU and wsbench to another, prints a Markdown table
and writes the results file, bench/results/<name>.json (every run, the
summary, and "meta": date, commit, command, machine, versions), which
bench/report.py renders. See bench/README.md.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PEERS = BENCH / "peers"
VENV = BENCH / ".venv"
SHARED = Path(os.environ.get("LAPPS_SHARED", REPO.parent / "shared"))
LOADGEN = SHARED / "tools" / "loadgen"
PEER_PACKAGES = ["websockets", "aiohttp", "picows", "uvloop"]
LIMIT = 16 * 1024 * 1024
BASELINE = "autobahn"
LUA_BENCHMARK = REPO / "apps" / "benchmark" / "benchmark.lua"
ETC = REPO / "etc"
LUA_LINE = re.compile(r"(\d+)\s+messages\s+rece(?:i)?ved\s+per\s+(\d+(?:\.\d+)?)\s*ms")
LUA_CONNECTED = re.compile(r"Sockets connected:\s*(\d+)")
URL = re.compile(r"^(wss?)://([^/]+):(\d+)(/.*)?$")

sys.path.insert(0, str(PEERS))
import nginx as nginx_peer  # noqa: E402 -- bench/peers/nginx.py, beside the other peers


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Processes: every one started here is stopped by pid, whatever happens.

class Processes:
    def __init__(self):
        self.running = {}

    def start(self, argv, **kwargs):
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.running[proc.pid] = proc
        return proc

    def stop(self, proc, timeout=20.0):
        """SIGTERM the pid, wait, SIGKILL the pid if it is still there."""
        try:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"  pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        except ProcessLookupError:
            pass
        finally:
            self.running.pop(proc.pid, None)
        return proc.returncode

    def stop_all(self):
        for proc in list(self.running.values()):
            self.stop(proc, timeout=10.0)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, port, timeout=60.0, what="server"):
    """Connect to the port until it answers; fail if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not listening on {port} after {timeout:.0f} s")
            time.sleep(0.05)


def cpu_times(pid):
    """(utime, stime) of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def cpu_seconds(pid):
    """utime+stime of a process (all its threads)."""
    return sum(cpu_times(pid))


def machine_cpu():
    """(busy, steal) CPU-seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


class Neighbours:
    """CPU the rest of the machine used while we measured: machine busy time
    minus our own processes' (in cores), and the hypervisor's steal."""

    def __init__(self, *pids):
        self.pids = pids
        self.t, (self.busy, self.steal) = time.monotonic(), machine_cpu()
        self.ours = self._ours()

    def _ours(self):
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = children.ru_utime + children.ru_stime
        own = resource.getrusage(resource.RUSAGE_SELF)
        total += own.ru_utime + own.ru_stime
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def done(self):
        wall = time.monotonic() - self.t
        busy, steal = machine_cpu()
        ours = self._ours()
        return {"other_cpu": round(max(0.0, (busy - self.busy) - (ours - self.ours)) / wall, 3),
                "steal": round((steal - self.steal) / wall, 3)}


def tail(path, n=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------
# Tools: the C load generator and echo server, the peers' venv, certificates.

def ensure_build_deps():
    have_gcc = shutil.which("gcc") or shutil.which("cc")
    have_ssl = Path("/usr/include/openssl/ssl.h").exists()
    if have_gcc and have_ssl and shutil.which("make"):
        return
    if os.geteuid() != 0:
        raise RuntimeError("gcc, make and libssl-dev are needed: "
                           "apt-get install -y gcc make libssl-dev")
    log("installing gcc make libssl-dev with apt-get ...")
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "gcc", "make", "libssl-dev"], check=True,
                   stdout=subprocess.DEVNULL, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def build_loadgen(tmp):
    if not (LOADGEN / "wsbench.c").exists():
        raise RuntimeError(f"no load generator at {LOADGEN} (set LAPPS_SHARED to the shared/ folder)")
    ensure_build_deps()
    dest = tmp / "loadgen"
    shutil.copytree(LOADGEN, dest)
    for name in ("wsbench", "echosrv", "wsbench-notls"):
        (dest / name).unlink(missing_ok=True)
    result = subprocess.run(["make", "-C", str(dest), "wsbench", "echosrv"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("building wsbench/echosrv failed:\n" + result.stdout + result.stderr)
    return dest / "wsbench", dest / "echosrv"


def venv_python():
    return VENV / "bin" / "python"


def ensure_venv(packages):
    """bench/.venv with the peer packages; returns {package: version or None}
    and notes for those that would not install."""
    notes = []
    if not venv_python().exists():
        log(f"creating {VENV.relative_to(REPO)} ...")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    versions = {}
    for package in packages:
        version = package_version(venv_python(), package)
        if version is None:
            log(f"installing {package} in {VENV.relative_to(REPO)} ...")
            result = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q",
                                     "--disable-pip-version-check", package],
                                    capture_output=True, text=True)
            version = package_version(venv_python(), package)
            if version is None:
                last = (result.stderr.strip().splitlines() or ["?"])[-1]
                notes.append(f"{package} could not be installed, left out: {last}")
        versions[package] = version
    return versions, notes


def package_version(python, package):
    result = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m, {package}; print(m.version({package!r}))"],
        capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def make_certs(tmp):
    from lapps import devcert
    paths = {"ca": tmp / "ssl" / "ca.pem", "cert": tmp / "ssl" / "localhost.crt",
             "key": tmp / "ssl" / "localhost.key"}
    devcert.ensure(str(paths["ca"]), str(paths["cert"]), str(paths["key"]))
    return {k: str(v) for k, v in paths.items()}


def twistd():
    candidate = Path(sys.executable).parent / "twistd"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("twistd")
    return [found] if found else [sys.executable, "-c",
                                  "from twisted.scripts.twistd import run; run()"]


# --------------------------------------------------------------------------
# The servers.

class Ctx:
    """What the server definitions need at run time."""

    def __init__(self, tmp, wsbench, echosrv, cpus, versions):
        self.tmp, self.wsbench, self.echosrv = tmp, wsbench, echosrv
        self.server_cpu, self.client_cpu = cpus
        self.versions = versions
        self._certs = None

    @property
    def certs(self):
        if self._certs is None:
            self._certs = make_certs(self.tmp)
        return self._certs

    def pin(self, cpu):
        return ["taskset", "-c", str(cpu)] if cpu is not None else []


def lapps_echo_argv(ctx, port, tls, fast_path=True, extra=None):
    """twistd on a config of echo.lua; ``extra``: more keys of its server section.
    No access log, as nginx's peer runs with ``access_log off``."""
    server = {"ip": "127.0.0.1", "port": port, "tls": tls, "fast_path": fast_path,
              "access_log": False, **(extra or {})}
    if tls:
        server["tls_certificates"] = ctx.certs
    config = {"server": server,
              "directories": {"applications": str(REPO / "apps")},
              "services": {"echo": {"standalone": False, "auto_start": True, "instances": 1,
                                    "protocol": "raw", "request_target": "/echo",
                                    "max_inbound_message_size": LIMIT}}}
    path = ctx.tmp / f"lapps-echo-{'wss' if tls else 'ws'}{'' if fast_path else '-off'}.json"
    path.write_text(json.dumps(config, indent=2))
    return twistd() + ["-n", "--pidfile=", "lapps", "--config", str(path)]


def peer_argv(script, python=None):
    return lambda ctx, port: [str(python or venv_python()), str(PEERS / script), "--port", str(port)]


class Server:
    """``nginx``: the server (wsbench) or the echo target (lua) is nginx's."""

    def __init__(self, key, label, argv, tls=False, venv=None, path="/echo", kind="wsbench",
                 note="", nginx=False, workers=1):
        self.key, self.label, self.argv, self.tls = key, label, argv, tls
        self.venv, self.path, self.kind, self.note = venv, path, kind, note
        self.nginx, self.workers = nginx, workers


def nginx_argv(ctx, port, tls, workers=1):
    return nginx_peer.argv(ctx.tmp / f"nginx-{port}", port, SHARED, ctx.certs if tls else None,
                           workers)


def nginx_server(key, tls, workers):
    """An nginx row: ``workers`` worker processes (and a master when more than one)."""
    processes = "1 process" if workers == 1 else f"{workers} workers"
    return Server(key, f"nginx + lua-resty-websocket{', wss' if tls else ''} ({processes})",
                  lambda ctx, port: nginx_argv(ctx, port, tls, workers), tls=tls, nginx=True,
                  workers=workers)


def server_pids(proc, workers, timeout=10.0):
    """The pids whose CPU is the server's: ``proc``'s, and once they have
    started, those of its ``workers`` worker processes when it has more than one."""
    if workers == 1:
        return [proc.pid]
    deadline = time.monotonic() + timeout
    while True:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if len(children) >= workers or time.monotonic() > deadline:
            return [proc.pid] + [int(c) for c in children]
        time.sleep(0.05)


SERVERS = [
    Server("lapps-ws", "lapps ws (echo.lua, 1 instance)",
           lambda ctx, port: lapps_echo_argv(ctx, port, False)),
    Server("lapps-wss", "lapps wss (echo.lua, 1 instance)",
           lambda ctx, port: lapps_echo_argv(ctx, port, True), tls=True),
    Server("lapps-ws-off", "lapps ws, fast_path off",
           lambda ctx, port: lapps_echo_argv(ctx, port, False, fast_path=False)),
    Server("lapps-wss-off", "lapps wss, fast_path off",
           lambda ctx, port: lapps_echo_argv(ctx, port, True, fast_path=False), tls=True),
    Server(BASELINE, "Autobahn/Twisted, bare echo", peer_argv("autobahn_echo.py", sys.executable)),
    Server("autobahn-wss", "Autobahn/Twisted, bare echo, wss",
           lambda ctx, port: peer_argv("autobahn_echo.py", sys.executable)(ctx, port)
           + ["--cert", ctx.certs["cert"], "--key", ctx.certs["key"]], tls=True),
    Server("websockets", "websockets {version} (asyncio)", peer_argv("websockets_echo.py"),
           venv="websockets"),
    Server("aiohttp", "aiohttp {version} (asyncio)", peer_argv("aiohttp_echo.py"),
           venv="aiohttp"),
    Server("picows", "picows {version} (uvloop {uvloop})", peer_argv("picows_echo.py"),
           venv="picows"),
    nginx_server("nginx-ws", False, 1),
    nginx_server("nginx-wss", True, 1),
    nginx_server("nginx-ws-2w", False, 2),
    nginx_server("nginx-wss-2w", True, 2),
    Server("echosrv", "echosrv (C, ceiling)",
           lambda ctx, port: [str(ctx.echosrv), "-p", str(port)]),
    Server("lua-ws", "lapps ws: benchmark.lua → echo.lua, one process",
           None, kind="lua", note="etc/benchmark-ws.json"),
    Server("lua-wss", "lapps wss: benchmark.lua → echo.lua, one process",
           None, tls=True, kind="lua", note="etc/benchmark-wss.json"),
    Server("lua-ws-nginx", "lapps ws: benchmark.lua → nginx + lua-resty-websocket",
           None, kind="lua", note="etc/benchmark-ws.json, echo on nginx", nginx=True),
    Server("lua-wss-nginx", "lapps wss: benchmark.lua → nginx + lua-resty-websocket",
           None, tls=True, kind="lua", note="etc/benchmark-wss.json, echo on nginx", nginx=True),
]
SMOKE = ["lapps-ws", "echosrv", "lua-ws", "lua-ws-nginx"]


def label(server, versions):
    return server.label.format(version=versions.get(server.venv) or "?",
                               uvloop=versions.get("uvloop") or "not installed")


# --------------------------------------------------------------------------
# One wsbench run against one server.

def run_wsbench(ctx, procs, server, rep, args):
    port = free_port()
    argv = ctx.pin(ctx.server_cpu) + server.argv(ctx, port)
    logfile = ctx.tmp / f"{server.key}-{rep}.log"
    record = {"server": server.key, "label": label(server, ctx.versions), "rep": rep,
              "command": argv, "loadavg_before": os.getloadavg(), "ok": False}
    with open(logfile, "wb") as out:
        proc = procs.start(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_listening(proc, port, what=server.key)
        pids = server_pids(proc, server.workers)  # (nginx's workers are the server's, not neighbours)
        bench = ctx.pin(ctx.client_cpu) + [
            str(ctx.wsbench), "-H", "127.0.0.1", "-p", str(port), "-u", server.path,
            "-c", str(args.conns), "-s", str(args.size), "-w", str(args.warmup),
            "-d", str(args.duration), "-S", ",".join(map(str, pids))
        ] + (["-t"] if server.tls else [])
        record["wsbench_command"] = bench
        neighbours = Neighbours(*pids)
        result = subprocess.run(bench, capture_output=True, text=True,
                                timeout=15 + args.warmup + args.duration + 60)
        record.update(neighbours.done())
        record["wsbench_rc"] = result.returncode
        line = (result.stdout.strip().splitlines() or [""])[-1]
        record["wsbench_line"] = line
        if result.stderr.strip():
            record["wsbench_stderr"] = result.stderr.strip()[-2000:]
        data = json.loads(line) if line.startswith("{") else None
        record["wsbench"] = data
        if data:
            rate, cpu = data["msgs_per_s"], data["server_cpu"]
            record["msgs_per_s"] = rate
            record["cpu_us_per_msg"] = cpu / rate * 1e6 if rate > 0 and cpu >= 0 else None
            record["ok"] = result.returncode == 0 and rate > 0
        if proc.poll() is not None:
            record["ok"] = False
            record["error"] = f"server exited ({proc.returncode}) during the run"
    except Exception as e:     # noqa: BLE001 -- one bad run must not stop the others
        record["error"] = str(e)
    finally:
        record["server_rc"] = procs.stop(proc)
    if not record["ok"]:
        record["server_log_tail"] = tail(logfile)
    return record


# --------------------------------------------------------------------------
# The Lua benchmark service (spec 7.2) against the Lua echo, in one server.

def lua_benchmark_missing(variant):
    missing = [p for p in (LUA_BENCHMARK, ETC / f"benchmark-{variant}.json") if not p.exists()]
    return [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in missing]


def lua_benchmark_config(ctx, variant, port, echo_port=None):
    """A copy of etc/benchmark-<variant>.json (one-file form) on a free port,
    with absolute paths, run-time certificates and the echo target moved to
    the port, or to ``echo_port`` (another server's echo: the config's own
    echo service is left out). Returns (path, port, number of benchmark
    instances, notes)."""
    target_port = echo_port or port
    source = ETC / f"benchmark-{variant}.json"
    config = json.loads(source.read_text())
    notes = []
    if "server" not in config:
        ws = source.parent / os.environ.get("WS_CONFIG", "ws.json")
        config["server"] = json.loads(ws.read_text()) if ws.exists() else {}
    old_port = config["server"].get("port", 5083)
    directories = config.setdefault("directories", {})
    apps = Path(directories.get("applications", "apps"))
    apps = apps if apps.is_absolute() else (source.parent / apps).resolve()
    directories["applications"] = str(apps)
    config["server"]["port"] = port
    if config["server"].get("tls"):
        config["server"]["tls_certificates"] = ctx.certs

    moved = []

    def retarget(node):
        if isinstance(node, dict):
            return {k: retarget(v) for k, v in node.items()}
        if isinstance(node, list):
            return [retarget(v) for v in node]
        if isinstance(node, str):
            m = URL.match(node)
            if m and int(m.group(3)) == old_port:
                moved.append(node)
                return f"{m.group(1)}://{m.group(2)}:{target_port}{m.group(4) or ''}"
        return node

    config = retarget(config)
    if not moved:
        # The target lives in benchmark.lua: run a copy of the applications
        # folder whose benchmark.lua points at the free port.
        lua = (apps / "benchmark" / "benchmark.lua").read_text()
        pattern = re.compile(r"(wss?://[^/\"'\s]+:)%d\b" % old_port)
        if pattern.search(lua):
            copy = ctx.tmp / f"apps-{variant}-{port}"
            shutil.copytree(apps, copy)
            (copy / "benchmark" / "benchmark.lua").write_text(
                pattern.sub(rf"\g<1>{target_port}", lua))
            config["directories"]["applications"] = str(copy)
            notes.append(f"echo target port {old_port} -> {target_port} in a copy of "
                         "benchmark.lua")
        else:
            config["server"]["port"] = old_port
            notes.append(f"no target URL on port {old_port} found to move: ran on port {old_port}")
    services = config.get("services", {})
    if echo_port:
        services.pop("echo", None)
        for descriptor in services.values():
            if "echo" in descriptor.get("depends", ()):
                descriptor["depends"] = [d for d in descriptor["depends"] if d != "echo"]
    if "benchmark" in services:
        instances = services["benchmark"].get("instances", 1)
    else:
        instances = sum(d.get("instances", 1) for d in services.values()
                        if d.get("standalone") or d.get("internal"))
    path = ctx.tmp / f"benchmark-{variant}-{port}.json"
    path.write_text(json.dumps(config, indent=2))
    return path, config["server"]["port"], max(instances, 1), notes


def run_lua_benchmark(ctx, procs, server, rep, args):
    variant = "wss" if server.tls else "ws"
    record = {"server": server.key, "label": server.label, "rep": rep, "kind": "lua",
              "loadavg_before": os.getloadavg(), "ok": False}
    echo = None
    try:
        echo_port = None
        if server.nginx:  # the echo first, on its own port
            echo_port = free_port()
            echo_argv = nginx_argv(ctx, echo_port, server.tls)
            record["echo_command"] = echo_argv
            echo = procs.start(echo_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(echo, echo_port, what="nginx")
        config, port, instances, notes = lua_benchmark_config(ctx, variant, free_port(),
                                                              echo_port)
    except Exception as e:  # noqa: BLE001
        record["error"] = f"cannot prepare the config: {e}"
        if echo is not None:
            procs.stop(echo)
        return record
    argv = twistd() + ["-n", "--pidfile=", "lapps", "--config", str(config)]
    record.update(command=argv, instances=instances, notes=notes)
    lines, arrivals = [], queue.Queue()
    proc = procs.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    measured = [proc.pid] + ([echo.pid] if echo else [])  # the clients, and nginx's echo

    def cpu():
        return sum(cpu_seconds(pid) for pid in measured)

    def reader():
        for raw in proc.stdout:
            arrivals.put((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))
        arrivals.put((time.monotonic(), None))

    threading.Thread(target=reader, daemon=True).start()
    try:
        connected, start = [], None
        patience = 60.0
        deadline = time.monotonic() + patience
        window = []
        while True:
            limit = (start[0] + args.duration) if start else deadline
            try:
                t, line = arrivals.get(timeout=max(0.0, limit - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"server exited ({proc.wait()}) during the run")
            lines.append(line)
            if start is None:
                m = LUA_CONNECTED.search(line)
                if m:
                    connected.append(int(m.group(1)))
                    if len(connected) == instances:
                        start = (t, cpu())
                        neighbours = Neighbours(*measured)
            else:
                m = LUA_LINE.search(line)
                if m and t <= start[0] + args.duration:
                    window.append((int(m.group(1)), float(m.group(2))))
        if start is None:
            raise RuntimeError(f"{len(connected)} of {instances} 'Sockets connected' lines "
                               f"within {patience:.0f} s")
        end = (time.monotonic(), cpu())
        record.update(neighbours.done())
        record["sockets_connected"] = connected
        if min(connected) == 0:
            raise RuntimeError(f"an instance connected no socket: {connected}")
        record["lines"] = [f"{c} messages per {ms:g}ms" for c, ms in window]
        if not window:
            raise RuntimeError("no '<n> messages received per <ms>ms' line in the window")
        per_line = [c * 1000.0 / ms for c, ms in window if ms > 0]
        rate = statistics.fmean(per_line) * instances
        share = (end[1] - start[1]) / (end[0] - start[0])
        record.update(msgs_per_s=rate, process_cpu=share, window_s=end[0] - start[0],
                      cpu_us_per_msg=share / rate * 1e6 if rate > 0 else None, ok=rate > 0)
    except Exception as e:  # noqa: BLE001
        record["error"] = str(e)
    finally:
        record["server_rc"] = procs.stop(proc)
        if echo is not None:
            record["echo_rc"] = procs.stop(echo)
    if not record["ok"]:
        record["server_log_tail"] = "\n".join(lines[-30:])
    return record


# --------------------------------------------------------------------------
# Summary.

def summarize(runs, order):
    rows = []
    for key in order:
        mine = [r for r in runs if r["server"] == key]
        ok = [r for r in mine if r["ok"]]
        rates = [r["msgs_per_s"] for r in ok]
        cpu = [r["cpu_us_per_msg"] for r in ok if r.get("cpu_us_per_msg")]
        share = [r["wsbench"]["server_cpu"] if r.get("wsbench") else r.get("process_cpu")
                 for r in ok]
        share = [x for x in share if x is not None and x >= 0]
        rows.append({"server": key, "label": mine[0]["label"] if mine else key,
                     "kind": mine[0].get("kind", "wsbench") if mine else "wsbench",
                     "runs": len(mine), "ok": len(ok),
                     "msgs_per_s_median": statistics.median(rates) if rates else None,
                     "msgs_per_s_min": min(rates) if rates else None,
                     "msgs_per_s_max": max(rates) if rates else None,
                     "cpu_us_per_msg_median": statistics.median(cpu) if cpu else None,
                     "cpu_share_median": statistics.median(share) if share else None})
    base = next((r["cpu_us_per_msg_median"] for r in rows if r["server"] == BASELINE), None)
    for row in rows:
        c = row["cpu_us_per_msg_median"]
        row["ratio_to_autobahn"] = c / base if c and base and row["kind"] == "wsbench" else None
    return rows


def fmt_rate(row):
    if row["msgs_per_s_median"] is None:
        return "failed"
    return (f"{row['msgs_per_s_median']:,.0f} "
            f"({row['msgs_per_s_min']:,.0f}–{row['msgs_per_s_max']:,.0f})")


def table(rows, kind):
    if kind == "lua":
        out = ["| benchmark | msgs/s median (min–max) | process CPU-µs/msg (server + clients) "
               "| process CPU (cores) |", "|---|---:|---:|---:|"]
    else:
        out = ["| server | msgs/s median (min–max) | server CPU-µs/msg "
               "| CPU-µs/msg vs Autobahn/Twisted | server CPU (cores) |",
               "|---|---:|---:|---:|---:|"]
    for row in rows:
        if row["kind"] != kind:
            continue
        cpu, ratio, share = (row["cpu_us_per_msg_median"], row["ratio_to_autobahn"],
                             row["cpu_share_median"])
        runs = "" if row["ok"] == row["runs"] else f" ({row['ok']}/{row['runs']} runs ok)"
        cells = [f"{row['label']}{runs}", fmt_rate(row), f"{cpu:.1f}" if cpu else "—"]
        if kind != "lua":
            cells.append(f"{ratio:.2f}×" if ratio else "—")
        cells.append(f"{share:.2f}" if share is not None else "—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# The results file: bench/results/<name>.json, with the machine, versions and
# date in "meta" (bench/report.py renders it as the README's tables).

RESULTS = BENCH / "results"
LUA_KEYS = ["lua-ws", "lua-wss", "lua-ws-nginx", "lua-wss-nginx"]


def results_path(out, name, default):
    """``out`` if given, else bench/results/<name or default>.json."""
    if out is not None:
        return out
    name = name or default
    if not name or "/" in name or name.startswith("."):
        raise SystemExit(f"--name {name!r}: a plain file name (no '/'), without .json")
    return RESULTS / f"{name.removesuffix('.json')}.json"


def default_name(args, all_keys):
    """``echo`` for every server, ``lua-benchmark`` for the four lua-*
    servers, else ``echo-<key>+<key>...``; ``-<size>B`` / ``-<conns>conns``
    when those differ from the defaults; ``smoke`` for --smoke."""
    if args.smoke:
        return "smoke"
    keys = [s.key for s in args.selected]
    if keys == list(all_keys):
        name = "echo"
    elif sorted(keys) == sorted(LUA_KEYS):
        name = "lua-benchmark"
    else:
        name = "echo-" + "+".join(keys)
    if args.size != 1024:
        name += f"-{args.size}B"
    if args.conns != 100:
        name += f"-{args.conns}conns"
    return name


def _git(*argv):
    return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True,
                          check=True).stdout


def git_state():
    """The checkout's commit and what is uncommitted in it (lapps runs from it)."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        porcelain = _git("status", "--porcelain").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    paths = sorted(line[3:] for line in porcelain if line.strip())
    lapps = [p for p in paths if p.startswith("lapps/") or " -> lapps/" in p]
    return {"commit": commit, "short": commit[:7], "dirty": bool(paths),
            "uncommitted_files": len(paths), "uncommitted_in_lapps_files": len(lapps),
            "uncommitted": paths[:50]}


def _first(path, prefix, sep=":"):
    """The value of the first line of a /proc or /etc file starting with ``prefix``."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix) and sep in line:
                return line.split(sep, 1)[1].strip().strip('"')
    return None


def machine():
    """What the numbers were measured on."""
    flags = _first("/proc/cpuinfo", "flags") or ""
    mem = _first("/proc/meminfo", "MemTotal")
    return {"cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor() or "?",
            "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "virtual": "hypervisor" in flags.split(),
            "mem_total_mib": int(mem.split()[0]) // 1024 if mem else None,
            "kernel": platform.release(), "os": _first("/etc/os-release", "PRETTY_NAME", "="),
            "arch": platform.machine()}


def _version(dist):
    import importlib.metadata
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def nginx_versions():
    """nginx's own version, its Lua module's package and lua-resty-websocket's."""
    out = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10).stderr
        m = re.search(r"nginx/(\S+)", text)
        out["nginx"] = m.group(1) if m else text.strip() or None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-http-lua"],
                                capture_output=True, text=True, timeout=10)
        if result.returncode == 0 and result.stdout:
            out["libnginx-mod-http-lua"] = result.stdout.strip()
    protocol = (SHARED / "peers" / "lua-resty-websocket" / "lib" / "resty" / "websocket"
                / "protocol.lua")
    with contextlib.suppress(OSError):
        m = re.search(r"_VERSION\s*=\s*['\"]([^'\"]+)", protocol.read_text())
        out["lua-resty-websocket"] = m.group(1) if m else None
    return out


def stack_versions(nginx=False, peers=None):
    """The Python stack lapps runs on (the harness's, which the lapps and
    Autobahn servers use), LuaJIT as lupa loads it, OpenSSL, the load
    generator's sources, nginx's when it runs, and bench/.venv's peers."""
    import ssl
    out = {"python": f"{platform.python_implementation()} {platform.python_version()}",
           "lapps": _version("lapps"), "twisted": _version("twisted"),
           "autobahn": _version("autobahn"), "txaio": _version("txaio"),
           "lupa": _version("lupa"), "pyopenssl": _version("pyopenssl"),
           "websockets": _version("websockets"), "openssl": ssl.OPENSSL_VERSION}
    with contextlib.suppress(Exception):  # noqa: BLE001 -- lupa without LuaJIT 2.1
        from lupa import luajit21
        out["luajit"] = luajit21.LuaRuntime().lua_implementation
    with contextlib.suppress(Exception):  # noqa: BLE001
        import lapps
        out["lapps_path"] = str(Path(lapps.__file__).resolve().parent)
    import hashlib
    for name in ("wsbench.c", "echosrv.c"):
        with contextlib.suppress(OSError):
            out[f"loadgen_{name}_sha256"] = hashlib.sha256(
                (LOADGEN / name).read_bytes()).hexdigest()[:12]
    if nginx:
        out.update(nginx_versions())
    if peers:
        out["peers"] = dict(peers)
    return out


def display(path):
    """A path as the user would type it from the repository root."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def start_meta(script, argv):
    """``meta`` as the run starts: date, command, checkout, machine, load."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return {"date": utc_now(), "command": shlex.join(["python3", f"bench/{script}"] + argv),
            "argv": argv, "cwd": os.getcwd(), "git": git_state(), "machine": machine(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "_started": time.monotonic()}


def finish_meta(meta, versions):
    """Completes ``meta`` as the run ends: end date, elapsed, load, versions,
    and the commit then (the checkout can change under a long run)."""
    meta = dict(meta)
    started = meta.pop("_started")
    meta.update(date_end=utc_now(), elapsed_s=round(time.monotonic() - started, 1),
                loadavg_end=[round(x, 2) for x in os.getloadavg()], versions=versions)
    end = git_state()
    meta["git"] = dict(meta["git"], commit_at_end=end.get("commit"),
                       uncommitted_files_at_end=end.get("uncommitted_files"))
    return meta


def write_results(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="servers: " + ", ".join(s.key for s in SERVERS))
    p.add_argument("--reps", type=int, default=5, help="repetitions of each server (default 5)")
    p.add_argument("--warmup", type=float, default=2.0, help="wsbench warm-up seconds (default 2)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured seconds per run (default 10)")
    p.add_argument("--size", type=int, default=1024, help="message bytes (default 1024)")
    p.add_argument("--conns", type=int, default=100, help="connections (default 100)")
    p.add_argument("--servers", help="comma-separated subset of the servers, in this order")
    p.add_argument("--smoke", action="store_true",
                   help="1 rep, 1 s warm-up, 2 s measured, lapps-ws, echosrv and the Lua "
                        "benchmark against lapps and nginx only, no venv")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    p.add_argument("--name", help="results file bench/results/NAME.json (default: echo for "
                   "every server, lua-benchmark for the lua-* four, else echo-<servers>; "
                   "-<size>B, -<conns>conns when not 1024 and 100; smoke for --smoke)")
    p.add_argument("--out", type=Path, help="results file path (overrides --name)")
    args = p.parse_args(argv)
    if args.smoke:
        args.reps, args.warmup, args.duration = 1, 1.0, 2.0
        args.servers = args.servers or ",".join(SMOKE)
    known = {s.key: s for s in SERVERS}
    keys = args.servers.split(",") if args.servers else list(known)
    unknown = [k for k in keys if k not in known]
    if unknown:
        p.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(known)}")
    args.selected = [known[k] for k in keys]
    args.out = results_path(args.out, args.name, default_name(args, known))
    return args


def pick_cpus(no_pin):
    if no_pin or not shutil.which("taskset"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    meta = start_meta("run.py", argv)
    notes = []
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lapps-bench-"))
    runs = []
    try:
        wsbench, echosrv = build_loadgen(tmp)
        versions = {}
        wanted = sorted({s.venv for s in args.selected if s.venv} |
                        ({"uvloop"} if any(s.key == "picows" for s in args.selected) else set()))
        if wanted:
            versions, venv_notes = ensure_venv([p for p in PEER_PACKAGES if p in wanted])
            notes += venv_notes
        servers = []
        for s in args.selected:
            if s.venv and not versions.get(s.venv):
                notes.append(f"{s.key}: left out ({s.venv} is not installed in bench/.venv)")
            elif s.nginx and nginx_peer.install(SHARED):
                missing = ", ".join(nginx_peer.missing(SHARED))
                notes.append(f"{s.key}: left out (missing {missing})")
            elif s.kind == "lua" and lua_benchmark_missing("wss" if s.tls else "ws"):
                missing = lua_benchmark_missing("wss" if s.tls else "ws")
                notes.append(f"{s.key}: skipped, the Lua benchmark is not there yet "
                             f"(missing {', '.join(missing)})")
            else:
                servers.append(s)
        cpus = pick_cpus(args.no_pin)
        if cpus[0] is None:
            notes.append("server and wsbench not pinned (fewer than 2 CPUs, no taskset, or --no-pin)")
        ctx = Ctx(tmp, wsbench, echosrv, cpus, versions)
        info = meta["machine"]
        log(f"# {info['cpu_count']} CPUs, {info['cpu_model']}, Python {platform.python_version()}, "
            f"load {meta['loadavg_start'][0]:.2f} {meta['loadavg_start'][1]:.2f}")
        planned = list(servers)
        for rep in range(args.reps):
            if rep == 1:
                for server in list(servers):
                    if not any(r["ok"] for r in runs if r["server"] == server.key):
                        servers.remove(server)
                        notes.append(f"{server.key}: failed its first repetition, not repeated")
            shift = rep % len(servers) if servers else 0
            for server in servers[shift:] + servers[:shift]:
                run = (run_lua_benchmark if server.kind == "lua" else run_wsbench)(
                    ctx, procs, server, rep, args)
                runs.append(run)
                rate = run.get("msgs_per_s")
                cpu = run.get("cpu_us_per_msg")
                log(f"rep {rep + 1}/{args.reps} {server.key:<10} " +
                    (f"{rate:>10,.0f} msgs/s  {cpu:6.1f} CPU-µs/msg" if run["ok"] and rate and cpu
                     else f"FAILED: {run.get('error') or run.get('wsbench_line') or '?'}"))
        rows = summarize(runs, [s.key for s in planned])
        git = meta["git"]
        if git and git.get("commit") != git_state().get("commit"):
            notes.append(f"the checkout changed during the run ({git['short']} -> "
                         f"{git_state().get('short')}): lapps runs from it")
        meta = finish_meta(meta, stack_versions(nginx=any(s.nginx for s in planned),
                                                peers=versions))
        pinned = (f"server on CPU {cpus[0]}, wsbench on CPU {cpus[1]}" if cpus[0] is not None
                  else "not pinned")
        print(f"Workload: {args.conns} connections × {args.size} B binary ping-pong, "
              f"{args.warmup:g} s warm-up, {args.duration:g} s measured, {args.reps} "
              f"repetition(s) interleaved; {pinned}.")
        print(f"Machine: {info['cpu_count']} CPUs, {info['cpu_model']}, "
              f"{meta['versions']['python']}, Linux {info['kernel']}; load average "
              f"{' '.join(f'{x:.2f}' for x in meta['loadavg_start'])} at start, "
              f"{' '.join(f'{x:.2f}' for x in meta['loadavg_end'])} at the end.")
        print(f"Command: `{meta['command']}`" + (f" at {git['short']}" + (
            f" with {git['uncommitted_files']} uncommitted file(s)"
            f" ({git['uncommitted_in_lapps_files']} in lapps/)" if git["dirty"] else "")
            if git else "") + ".\n")
        print(table(rows, "wsbench"))
        if any(r["kind"] == "lua" for r in rows):
            print("\nThe Lua benchmark service against the Lua echo in one lapps process, "
                  "and against nginx's echo (spec §7.2: msgs/s is the sum over instances of "
                  f"the mean per-line rate, {args.duration:g} s after the last 'Sockets "
                  "connected'; CPU is the whole lapps process, cws clients included, plus "
                  "nginx's when it echoes; not pinned):\n")
            print(table(rows, "lua"))
        others = [r["other_cpu"] for r in runs if "other_cpu" in r]
        steal = [r["steal"] for r in runs if "steal" in r]
        if others:
            busy = [f"{r['server']} rep {r['rep'] + 1} ({r['other_cpu']:.2f})"
                    for r in runs if r.get("other_cpu", 0) > 0.25]
            print(f"\nNeighbours: other processes used {statistics.median(others):.2f} cores "
                  f"(median; max {max(others):.2f}) during the runs, hypervisor steal "
                  f"{statistics.median(steal):.2f} (max {max(steal):.2f}). "
                  + (f"Runs with more than 0.25 cores of other load ({len(busy)} of "
                     f"{len(others)}): {', '.join(busy[:6])}"
                     + (f" and {len(busy) - 6} more." if len(busy) > 6 else ".")
                     if busy else "No run had more than 0.25 cores of other load."))
        for note in notes:
            print(f"\nNote: {note}")
        for run in runs:
            if not run["ok"]:
                print(f"\nFailed: {run['server']} rep {run['rep'] + 1}: "
                      f"{run.get('error') or run.get('wsbench_line') or run.get('wsbench_stderr')}")
        write_results(args.out, {
            "workload": "echo", "name": args.out.stem, "meta": meta,
            "settings": {"reps": args.reps, "warmup": args.warmup, "duration": args.duration,
                         "size": args.size, "conns": args.conns, "server_cpu": cpus[0],
                         "client_cpu": cpus[1], "servers": [s.key for s in args.selected]},
            "notes": notes, "summary": rows, "runs": runs})
        print(f"\n({time.monotonic() - started:.0f} s; results in {display(args.out)}: "
              f"python3 bench/report.py {display(args.out)} for the README's tables)")
        return 0 if runs and all(r["ok"] for r in runs) else 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
