"""The admin listener (server key ``admin``): /healthz, /readyz (not ready
while a service starts and while Redis is down), /metrics, the status
page over plain HTTP, its ACL, off by default, and the WebSocket port
serving none of it. Real ``twistd -n lapps`` processes, real sockets."""

import contextlib
import os
import re
import signal
import socket

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from conftest import Server, reactive, run_twistd, write_config
from lapps import admin, config as configuration
from redis_server import RedisServer
from support.admin import admin_port, admin_settings, get, poll_metrics
from support.apps import ECHO, held_apps, held_services, write_apps

def test_health_ready_metrics_and_status_page(start_server, tmp_path):
    server = start_server({"echo": reactive("/echo", instances=2)}, admin_settings(),
                          write_apps(tmp_path / "apps", echo=ECHO))
    port = admin_port(server)
    status, headers, body = get(port, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert get(port, "/readyz")[::2] == (200, "ready\n")

    with connect(server.url("/echo")) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        status, headers, body = get(port, "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=")
        assert list(text_string_to_metric_families(body)), "no metric parsed"

        status, headers, page = get(port, "/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert "script-src" not in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert '<tr data-service="echo">' in page
        assert '<td class="number connections">1</td>' in page
        assert '<p id="readiness" class="ready">ready</p>' in page
        assert '<td class="number connections">1</td>' in get(port, "/status")[2]

    assert get(port, "/no-such-page")[0] == 404
    assert get(port, "/healthz", method="POST")[0] == 405
    assert get(port, "/healthz", method="HEAD")[0] == 200

    server.stop()
    stops = [line for line in server.lines
             if "listener on ws://" in line or "admin interface stopped" in line]
    assert [("admin" in line) for line in stops] == [False, True]  # admin last


def test_readyz_says_what_has_not_started_yet(start_server, tmp_path):
    server = start_server(held_services(), admin_settings(), held_apps(tmp_path))
    port = admin_port(server)
    server.wait_for("held waiting")
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert body.splitlines() == ["service held: starting", "service waiter: waiting for held"]
    assert get(port, "/healthz")[0] == 200  # alive all along

    with connect(server.url("/open")) as ws:
        ws.send("the test")
        assert ws.recv() == "the test"
    server.wait_for("held released by the test")
    server.wait_for(r"service waiter instance 0 started")
    assert get(port, "/readyz")[::2] == (200, "ready\n")


def test_readyz_is_not_ready_while_redis_is_down(start_server, tmp_path):
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    try:
        server = start_server({"echo": reactive("/echo")},
                              {"bus": {"backend": "redis", "url": redis.url}, **admin_settings()},
                              write_apps(tmp_path / "apps", echo=ECHO))
        port = admin_port(server)
        server.wait_for("lapps ready")
        assert get(port, "/readyz")[::2] == (200, "ready\n")

        redis.stop()
        server.wait_for("bus unavailable")
        status, _, body = get(port, "/readyz")
        assert status == 503
        assert body.startswith(f"the bus is unavailable: Redis at {redis.url}: ")
        assert len(body.splitlines()) == 1

        redis.start()
        server.wait_for("bus available", count=2)
        assert get(port, "/readyz")[::2] == (200, "ready\n")
    finally:
        redis.stop()


@pytest.mark.parametrize("acl", [{"policy": "deny"},
                                 {"policy": "allow", "exclude": ["127.0.0.0/8"]}])
def test_the_admin_acl_closes_a_denied_peer_at_accept(start_server, tmp_path, acl):
    server = start_server({"echo": reactive("/echo")}, admin_settings(acl=acl),
                          write_apps(tmp_path / "apps", echo=ECHO))
    port = admin_port(server)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = s.recv(1024)
        except ConnectionError:  # reset, or a broken pipe: closed as well
            answer = b""
    assert answer == b""
    server.wait_for(r"tcp4:127\.0\.0\.1:\d+ denied by the admin ACL")
    with connect(server.url("/echo")) as ws:  # the WebSocket port is not concerned
        ws.send("still")
        assert ws.recv() == "still"


def test_admin_is_off_by_default(start_server, tmp_path):
    cfg = configuration.from_dict({"services": {}}, str(tmp_path))
    assert cfg.server["admin"] == {"ip": "127.0.0.1", "port": 0,
                                   "acl": {"policy": "allow", "exclude": []}}
    assert admin.build(cfg.server, status=None, reactor=None) is None
    server = start_server({"echo": reactive("/echo")}, None,
                          write_apps(tmp_path / "apps", echo=ECHO))
    server.wait_for("lapps ready")
    assert server.count("admin interface") == 0


def test_the_websocket_port_serves_no_admin_path(start_server, tmp_path):
    server = start_server({"echo": reactive("/echo")}, admin_settings(),
                          write_apps(tmp_path / "apps", echo=ECHO))
    for path in ("/metrics", "/healthz", "/readyz", "/status"):
        status, _, body = get(server.port, path)
        assert (status, body) == (404, f"no service at {path}\n")
        with pytest.raises(websockets.InvalidStatus) as refused:
            with connect(server.url(path)):
                pass
        assert refused.value.response.status_code == 404


def test_admin_config_errors_name_their_key(tmp_path):
    cases = [
        ({"port": 5083, "admin": {"port": 5083}},
         "/server/admin/port: 5083 is the WebSocket port; give the admin listener its own"),
        ({"admin": {"ip": "localhost", "port": 9000}},
         "/server/admin/ip: expected an IPv4 or IPv6 address"),
        ({"admin": {"port": 70000}}, "/server/admin/port: expected"),
        ({"admin": {"acl": {"policy": "maybe"}}}, "/server/admin/acl/policy: expected"),
        ({"admin": {"metrics": True}}, "/server/admin/metrics: unknown key"),
    ]
    for server, expected in cases:
        with pytest.raises(configuration.ConfigError) as error:
            configuration.from_dict({"server": server, "services": {}}, str(tmp_path))
        assert any(expected in line for line in error.value.lines), error.value.lines
    # another address may share the port number
    configuration.from_dict({"server": {"ip": "10.1.2.3", "port": 9000,
                                        "admin": {"port": 9000}}, "services": {}}, str(tmp_path))


def test_a_supervisor_reports_its_workers_and_their_bus(tmp_path):
    """Worker processes: /readyz follows each worker's readiness and the bus
    state it logs (relayed by the supervisor); the page lists the workers."""
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    server = None
    try:
        config = write_config(tmp_path, {"echo": reactive("/echo")}, {
            "workers": {"workers": 2}, "bus": {"backend": "redis", "url": redis.url},
            **admin_settings()}, write_apps(tmp_path / "apps", echo=ECHO))
        server = Server(config)
        port = admin_port(server)
        server.wait_for(r"lapps ready: 2 workers")
        assert get(port, "/readyz")[::2] == (200, "ready\n")
        page = get(port, "/")[2]
        pids = {int(m.group(1)): int(m.group(2)) for m in re.finditer(
            r'<tr data-worker="(\d)"><td class="number">\d</td><td class="number pid">(\d+)</td>',
            page)}
        assert sorted(pids) == [0, 1]

        with contextlib.ExitStack() as clients:
            for _ in range(6):
                ws = clients.enter_context(connect(server.url("/echo")))
                ws.send(b"x")
                assert ws.recv() == b"x"
            # the workers write their numbers every 5 s: the sums show within 15
            assert poll_metrics(port, lambda m: m("lapps_connections_open", service="echo") == 6
                                and m("lapps_messages_received_total", service="echo") == 6)
        assert poll_metrics(port, lambda m: m("lapps_connections_open", service="echo") == 0)

        redis.stop()
        server.wait_for("bus unavailable", count=2)  # one per worker
        status, _, body = get(port, "/readyz")
        assert status == 503
        assert body.splitlines() == [
            f"worker {i} (pid {pids[i]}): the bus is unavailable: Redis at {redis.url}"
            for i in (0, 1)]
        redis.start()
        server.wait_for("bus available", count=4)
        assert get(port, "/readyz")[::2] == (200, "ready\n")

        os.kill(pids[0], signal.SIGKILL)
        server.wait_for(rf"worker 0 \(pid {pids[0]}\) ended")
        status, _, body = get(port, "/readyz")
        assert status == 503
        assert re.fullmatch(r"worker 0 \((no process|pid \d+)\): not ready\n", body), body
        server.wait_for(r"lapps ready: 1 services", count=3)  # the new worker 0
        assert get(port, "/readyz")[::2] == (200, "ready\n")
        assert '<td class="number restarts">1</td>' in get(port, "/")[2]
        assert poll_metrics(port, lambda m: m("lapps_worker_restarts_total") == 1)

        server.stop()
        stops = [line for line in server.lines
                 if "all workers stopped" in line or "admin interface stopped" in line]
        assert [("admin" in line) for line in stops] == [False, True]  # admin last
    finally:
        if server is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        redis.stop()


@pytest.mark.parametrize("which", ["port", "admin"])
def test_a_port_in_use_stops_the_start_with_one_line(tmp_path, which):
    """The WebSocket port or the admin port already taken: one line and
    exit status 1 before anything starts, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = {"port": port} if which == "port" else admin_settings(port=port)
        config = write_config(tmp_path, {"echo": reactive("/echo")}, server,
                              write_apps(tmp_path / "apps", echo=ECHO))
        result = run_twistd(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: cannot listen on 127.0.0.1 port {port}: Address already in use"]
    assert "Traceback" not in result.stdout + result.stderr
