"""lapps.fast.dispatch: the epoll reactor's cheaper dispatch keeps Twisted's log
context, and is installed only where it applies.

A small server (tests/reactor_probe.py, a real reactor on a real socket,
lapps's ``EagerServer`` transports) answers each read with the ``system``
its legacy log line got, and reports what a handler that raises logs; run
with the dispatch and without, both must say the same."""

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from conftest import TWISTD, Server, reactive, write_config

PROBE = Path(__file__).resolve().parent / "reactor_probe.py"


class Probe:
    def __init__(self, *argv):
        self.process = subprocess.Popen([sys.executable, str(PROBE), *argv],
                                        stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.process.stdout.readline())

    def line(self):
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture
def probe():
    started = []

    def start(*argv):
        p = Probe(*argv)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def _exchange(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return s.recv(4096).decode()


def _what_it_logs(probe, dispatch):
    server = probe("--dispatch", dispatch)
    port = server.hello["port"]
    systems = [_exchange(port, b"hello"), _exchange(port, b"again")]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"boom")
        error = server.line()
        assert s.recv(10) == b""  # dropped by the reactor, as Twisted does
    return server.hello, systems, error


def test_the_dispatch_is_installed_on_the_epoll_reactor_only(probe):
    assert probe("--dispatch", "lapps").hello["installed"] is True
    assert probe("--dispatch", "lapps", "--reactor", "select").hello["installed"] is False


def test_legacy_log_lines_keep_their_connection_system_with_the_dispatch(probe):
    hello, systems, error = _what_it_logs(probe, "lapps")
    assert hello["installed"]
    twisted_hello, twisted_systems, twisted_error = _what_it_logs(probe, "twisted")
    assert not twisted_hello["installed"]
    # each connection's own transport prefix (protocol, session number, peer host)
    assert [s.split(",")[0] for s in systems] == ["Echo", "Echo"]
    assert systems[0] != systems[1] and all(s.endswith(",127.0.0.1") for s in systems)
    assert [s.rsplit(",", 2)[0] for s in systems] == \
        [s.rsplit(",", 2)[0] for s in twisted_systems]
    # what escapes a handler: logged as an error with the same system, and the loop goes on
    assert error["isError"] and error["why"] == twisted_error["why"] == "boom"
    assert error["system"].startswith("Echo,") and twisted_error["system"].startswith("Echo,")
    assert error["system"].endswith(",127.0.0.1")


@pytest.mark.parametrize("reactor_name", ["epoll", "select"])
def test_twistd_serves_with_either_reactor(tmp_path, reactor_name):
    config = write_config(tmp_path, {"echo": reactive("/echo")})
    server = Server(config, argv=TWISTD + ["-n", "--pidfile=", "--reactor", reactor_name,
                                           "lapps", "--config", str(config)])
    try:
        line = server.wait_for(r"keeps its own event dispatch|dispatches the events of lapps")
        assert ("dispatches" in line.group(0)) == (reactor_name == "epoll")

        asyncio.run(_one_echo(server.url("/echo")))
    finally:
        server.stop()


def test_fast_path_off_leaves_the_reactor_alone(start_server):
    server = start_server({"echo": reactive("/echo")}, {"fast_path": False})
    asyncio.run(_one_echo(server.url("/echo")))
    server.stop()
    assert server.count("reactor.dispatch|event dispatch|dispatches the events") == 0


async def _one_echo(url):
    async with websockets.connect(url) as ws:
        await ws.send(b"ping")
        assert await ws.recv() == b"ping"
