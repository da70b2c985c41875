"""Shared fixtures: a real lapps server (``twistd -n lapps``) in a subprocess
on an ephemeral loopback port, and helpers to wait on what it logs. The
other helpers that several test modules use are in tests/support/."""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import pytest
import websockets

from redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "apps"
TEST_APPS = Path(__file__).resolve().parent / "apps"
TWISTD = [str(Path(sys.executable).parent / "twistd")]
_LISTENING = re.compile(r"listening on \S+ \((.*):(\d+)\)")
_READY = re.compile(r"lapps ready: ")
#: What a server's log must never show, whatever its input.
BAD_LOG = re.compile(r"Traceback|Unhandled|Unexpected exception|#(error|critical)\]")


class Server:
    """A running ``twistd -n lapps`` whose output lines can be awaited."""

    #: Worker processes, each running every reactive service.
    workers = 1

    def __init__(self, config_path, env=None, argv=None, listening=_LISTENING, ready=_READY):
        self.config_path = config_path
        self.lines = []
        self._new = queue.Queue()
        self.process = subprocess.Popen(
            argv or TWISTD + ["-n", "--pidfile=", "lapps", "--config", str(config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        threading.Thread(target=self._read, daemon=True).start()
        match = self.wait_for(listening)
        self.host, self.port = match.group(1), int(match.group(2))
        if ready is not None:  # the reactor runs: a SIGTERM now is handled, not fatal
            self.wait_for(ready)

    def _read(self):
        for raw in self.process.stdout:
            self._new.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._new.put(None)

    def wait_started(self, services):
        """Block until every instance of ``services`` (name → descriptor) has
        started: "lapps ready" comes before the services that wait for their
        ``depends`` (those of etc/echo_lapps.json do)."""
        for name, descriptor in services.items():
            if descriptor.get("auto_start", True):
                self.wait_for(rf"service {name} instance \d+ started",
                              count=descriptor.get("instances", 1))

    def wait_for(self, pattern, timeout=15.0, count=1):
        """Block until ``count`` output lines (seen so far or arriving) match
        ``pattern``; return the last match. Fails on timeout or exit."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            matches = [m for m in map(rx.search, self.lines) if m]
            if len(matches) >= count:
                return matches[count - 1]
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {rx.pattern!r}; output:\n"
                                     + "\n".join(self.lines[-60:]))
            if line is None:
                raise AssertionError(f"server exited ({self.process.wait()}) before "
                                     f"{rx.pattern!r}; output:\n" + "\n".join(self.lines[-60:]))
            self.lines.append(line)

    def _take_arrived(self):
        """Move the lines read so far into ``lines`` (the end mark stays)."""
        while not self._new.empty():
            line = self._new.get()
            if line is None:
                self._new.put(None)
                return
            self.lines.append(line)

    def bad_lines(self):
        """The lines so far that show a traceback or an error."""
        self._take_arrived()
        return [line for line in self.lines if BAD_LOG.search(line)]

    def count(self, pattern):
        return sum(1 for line in self.lines if re.search(pattern, line))

    def url(self, path, scheme="ws"):
        return f"{scheme}://{self.host}:{self.port}{path}"

    def stop(self, timeout=15.0):
        """SIGTERM, wait for the exit, collect the remaining output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        while True:
            line = self._new.get(timeout=timeout)
            if line is None:
                break
            self.lines.append(line)
        return self.process.returncode


_WORKER_LISTENING = re.compile(r'"host": "([^"]+)", "port": (\d+), "tls"')  # a worker's listener.up
_SUPERVISOR_READY = re.compile(r"lapps ready: \{workers\} workers")  # the supervisor's server.ready


class Supervised(Server):
    """A ``twistd -n lapps`` with worker processes, logging JSON lines."""

    def __init__(self, config_path):
        super().__init__(config_path, argv=TWISTD + [
            "-n", "--pidfile=", "--logger", "lapps.logs.json_lines", "lapps",
            "--config", str(config_path)], listening=_WORKER_LISTENING, ready=_SUPERVISOR_READY)

    def events(self, name, **fields):
        """The events logged so far named ``name`` with these field values."""
        self._take_arrived()
        found = []
        for line in self.lines:
            if line.startswith("{") and f'"{name}"' in line:
                event = json.loads(line)
                if event.get("lapps_event") == name and \
                        all(event.get(k) == v for k, v in fields.items()):
                    found.append(event)
        return found

    def wait_event(self, name, count=1, timeout=20.0, **fields):
        """Block until ``count`` events ``name`` with these fields were logged;
        return the last of them."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rf'"lapps_event": "{re.escape(name)}"')
        while len(found := self.events(name, **fields)) < count:
            seen = self.count(pattern)
            self.wait_for(pattern, timeout=max(0.0, deadline - time.monotonic()), count=seen + 1)
        return found[count - 1]

    @property
    def workers(self):
        return self.events("server.ready", log_namespace="lapps.workers")[-1]["workers"]

    def worker_pids(self):
        """Worker index → pid of its latest start."""
        return {e["index"]: e["pid"] for e in self.events("worker.start")}


def run_twistd(config, timeout=60):
    """``twistd -n lapps`` on ``config`` run to its end (a start that is
    refused): the CompletedProcess, with stdout and stderr as text."""
    return subprocess.run(TWISTD + ["-n", "--pidfile=", "lapps", "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout)


def lapps_check(config):
    """``lapps check`` on ``config``: the CompletedProcess, output as text."""
    return subprocess.run([str(Path(sys.executable).parent / "lapps"), "check", str(config)],
                          capture_output=True, text=True)


def write_config(directory, services, server=None, applications=APPS):
    """A one-file config on an ephemeral loopback port; returns its path."""
    config = {"server": {"ip": "127.0.0.1", "port": 0, **(server or {})},
              "directories": {"applications": str(applications)},
              "services": services}
    path = Path(directory) / "lapps.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def reactive(target, **extra):
    """A reactive service descriptor."""
    return {"standalone": False, "auto_start": True, "instances": 1, "protocol": "raw",
            "request_target": target, "max_inbound_message_size": 16 * 1024 * 1024, **extra}


def standalone(**extra):
    """A standalone service descriptor."""
    return {"standalone": True, "auto_start": True, "instances": 1, **extra}


def call(method, *params):
    """A LAppS request (CBOR) calling ``method`` with ``params``."""
    return cbor2.dumps({"lapps": 1, "method": method, "params": list(params)})


async def subscribe(url, channel):
    """A client of a LAppS service at ``url`` with a ``subscribe`` method
    (``tests/apps/lprobe``, ``blaster``), subscribed to the bcast ``channel``."""
    ws = await websockets.connect(url, max_size=None)
    await ws.send(call("subscribe", channel))
    assert cbor2.loads(await ws.recv())["result"] == [True]
    return ws


@pytest.fixture(scope="session")
def redis(tmp_path_factory):
    """A redis-server of the test session's own, on a free loopback port
    (tests share it under key prefixes of their own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def reap():
    """``reap(server)`` → ``server`` (anything with a ``process``), killed
    after the test if it is still running."""
    started = []
    yield lambda server: started.append(server) or server
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def start_server(tmp_path, reap):
    """``start_server(services, server=None, applications=APPS)`` → a running
    :class:`Server`; every server started is stopped after the test."""

    def start(services, server=None, applications=APPS, env=None):
        return reap(Server(write_config(tmp_path, services, server, applications), env))

    return start


@pytest.fixture
def json_server(tmp_path, reap):
    """``json_server(services, server=None)``: a ``twistd -n lapps`` whose
    log lines are JSON (see ``support.jsonlog``); killed after the test."""
    def start(services, server=None):
        config = write_config(tmp_path, services, server, applications=TEST_APPS)
        return reap(Server(config, argv=TWISTD + [
            "-n", "--pidfile=", "--logger", "lapps.logs.json_lines", "lapps",
            "--config", str(config)],
            listening=re.compile(r'"lapps_event": "listener\.up".*"host": "([^"]+)", '
                                 r'"port": (\d+)'),
            ready=re.compile(r'"lapps_event": "server\.ready"')))

    return start


@pytest.fixture
def supervised(tmp_path, reap):
    """``supervised(services, applications=TEST_APPS, **server_keys)`` → a
    running :class:`Supervised` with two workers (on the host bus unless
    ``bus`` says otherwise); killed after the test if still running."""
    def start(services, applications=TEST_APPS, **server):
        config = write_config(tmp_path, services, {"workers": {"workers": 2},
                                                   "shutdown_timeout": 5, **server}, applications)
        return reap(Supervised(config))

    return start


@pytest.fixture
def echo_server(start_server):
    return start_server({"echo": reactive("/echo", instances=4)})
