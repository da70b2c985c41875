"""systemd's notify protocol (lapps.systemd): ``twistd -n lapps`` with
``NOTIFY_SOCKET`` set writes READY=1 to the test's datagram socket only
once its port accepts and its services have started, and STOPPING=1 when
it stops; the sample unit file says what the README says."""

import configparser
import socket
import threading
import uuid

from websockets.sync.client import connect

from conftest import REPO, Server, reactive, write_config
from lapps.systemd import notify
from redis_server import free_port
from support.apps import ECHO, held_apps, held_services, write_apps


def notify_socket(address):
    """A bound datagram socket, as systemd's (``address``: a path, or an
    abstract name starting with a NUL byte)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    return s


def test_ready_comes_only_once_every_service_has_started(tmp_path):
    path = str(tmp_path / "notify")
    with notify_socket(path) as systemd:
        config = write_config(tmp_path, held_services(), None, held_apps(tmp_path))
        server = Server(config, env={"NOTIFY_SOCKET": path})
        try:
            server.wait_for("held waiting")  # listening, one service still starting
            systemd.setblocking(False)
            try:
                early = systemd.recv(4096)
            except BlockingIOError:
                early = None
            assert early is None, f"{early!r} sent while a service was starting"

            systemd.settimeout(15)
            with connect(server.url("/open")) as ws:
                ws.send("the test")
            assert systemd.recv(4096) == b"READY=1"
            server.wait_for("held released by the test")  # (logged before READY=1)
            server.wait_for(r"service waiter instance 0 started")

            assert server.stop() is not None
            assert systemd.recv(4096) == b"STOPPING=1"
        finally:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()


def test_ready_comes_once_the_port_accepts_on_an_abstract_socket(tmp_path):
    """The datagram is awaited before anything is read from the server: when
    it arrives, a WebSocket connection to the port succeeds at once."""
    name = f"lapps-test-{uuid.uuid4().hex}"
    port = free_port()
    config = write_config(tmp_path, {"echo": reactive("/echo")}, {"port": port},
                          write_apps(tmp_path / "apps", echo=ECHO))
    with notify_socket("\0" + name) as systemd:
        systemd.settimeout(20)
        seen = {}

        def on_ready():
            seen["datagram"] = systemd.recv(4096)
            with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as ws:
                ws.send("ready?")
                seen["echo"] = ws.recv(timeout=5)

        waiter = threading.Thread(target=on_ready)
        waiter.start()
        server = Server(config, env={"NOTIFY_SOCKET": "@" + name})
        try:
            waiter.join(20)
            assert seen == {"datagram": b"READY=1", "echo": "ready?"}
        finally:
            server.stop()


def test_notify_needs_notify_socket_and_never_raises(tmp_path):
    assert notify("READY=1", environ={}) is False
    # a socket nobody listens on: not sent, and the caller goes on
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False
    with notify_socket(str(tmp_path / "here")) as systemd:
        assert notify("STATUS=x", environ={"NOTIFY_SOCKET": str(tmp_path / "here")}) is True
        assert systemd.recv(64) == b"STATUS=x"


def test_the_sample_unit_file():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((REPO / "etc" / "lapps.service").read_text())
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert "twistd -n --pidfile= lapps --config " in service["ExecStart"]
    assert service["ExecReload"].endswith("/bin/kill -HUP $MAINPID")
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["User"] and service["User"] != "root"
    assert service["NoNewPrivileges"] == "yes"
    assert "MemoryDenyWriteExecute" not in service  # LuaJIT's JIT writes code
    assert unit["Install"]["WantedBy"] == "multi-user.target"
