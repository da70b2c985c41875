"""cws, the Lua WebSocket client, against lapps servers over ws and wss."""

import asyncio
import signal
import socket
import struct
import threading

import pytest
import websockets

from conftest import APPS, TEST_APPS, reactive
from lapps import devcert
from support.pki import PKI, write_pem


def standalone_probe(scenario, target):
    return {"cwsprobe": {"standalone": True, "auto_start": True, "instances": 1,
                         "preload": ["cws", "nap", "time"],
                         "settings": {"scenario": scenario, "target": target}}}


@pytest.fixture
def target(start_server):
    """The server the client connects to: echo and probe over plain ws."""
    return start_server({"echo": reactive("/echo"), "probe": reactive("/probe")},
                        applications=TEST_APPS)


def run_probe(start_server, scenario, url, server=None):
    """Start a server whose cwsprobe runs ``scenario`` against ``url``; return
    its "cwsprobe:" lines once it says done (or failed to connect)."""
    client = start_server(standalone_probe(scenario, url), server=server, applications=TEST_APPS)
    client.wait_for(r"cwsprobe: (done|new failed)")
    return [l.split("cwsprobe: ", 1)[1] for l in client.lines if "cwsprobe: " in l]


def assert_echo_flow(lines):
    assert lines == ["new ok", "onopen true", "onmessage héllo 1 true", "onmessage bin 2 true",
                     "closed locally",
                     "send after local close false Communication error: the connection is closed",
                     "done"]


def test_ws_echo_with_callbacks_only_inside_eventloop(start_server, target):
    assert_echo_flow(run_probe(start_server, "echo", target.url("/echo")))


#: cws's wss on the stdlib's ssl (the fast path) and on pyOpenSSL (``fast_path: false``).
TLS_LAYERS = pytest.mark.parametrize("fast_path", [True, False], ids=["ssl", "pyopenssl"])


@TLS_LAYERS
def test_wss_verified_against_the_configured_ca(start_server, tmp_path, fast_path):
    pki = PKI(tmp_path / "server")
    tls_target = start_server({"echo": reactive("/echo")}, server=pki.server(),
                              applications=TEST_APPS)
    lines = run_probe(start_server, "echo", f"wss://localhost:{tls_target.port}/echo",
                      server={"tls_certificates": {"ca": str(pki.ca)}, "fast_path": fast_path})
    assert_echo_flow(lines)


@TLS_LAYERS
def test_wss_with_an_unknown_ca_is_refused(start_server, tmp_path, fast_path):
    pki, stranger = PKI(tmp_path / "server"), PKI(tmp_path / "stranger")
    tls_target = start_server({"echo": reactive("/echo")}, server=pki.server(),
                              applications=TEST_APPS)
    new, line, done = run_probe(start_server, "connect", f"wss://localhost:{tls_target.port}/echo",
                                server={"tls_certificates": {"ca": str(stranger.ca)},
                                        "fast_path": fast_path})
    assert (new, done) == ("new ok", "done")
    assert line.startswith("onerror Communication error on TLS handshake (")
    assert "certificate verify failed" in line and line.endswith(" true")


@TLS_LAYERS
def test_wss_hostname_mismatch_is_refused(start_server, tmp_path, fast_path):
    ca_cert, ca_key = devcert.make_ca()
    cert, key = devcert.make_server_cert(ca_cert, ca_key, hostnames=("other.example",), addresses=())
    ca = write_pem(tmp_path / "ca.pem", devcert.pem_cert(ca_cert))
    write_pem(tmp_path / "cert.pem", devcert.pem_cert(cert))
    write_pem(tmp_path / "key.pem", devcert.pem_key(key))
    tls_target = start_server({"echo": reactive("/echo")}, applications=TEST_APPS, server={
        "tls": True, "tls_certificates": {"ca": str(ca), "cert": str(tmp_path / "cert.pem"),
                                          "key": str(tmp_path / "key.pem")}})
    new, line, done = run_probe(start_server, "connect", f"wss://localhost:{tls_target.port}/echo",
                                server={"tls_certificates": {"ca": str(ca)},
                                        "fast_path": fast_path})
    assert (new, done) == ("new ok", "done")
    assert line.startswith("onerror Communication error on TLS handshake (")
    assert "localhost" in line or "hostname" in line.lower()


@TLS_LAYERS
def test_verification_can_be_turned_off(start_server, tmp_path, fast_path):
    pki, stranger = PKI(tmp_path / "server"), PKI(tmp_path / "stranger")
    tls_target = start_server({"echo": reactive("/echo")}, server=pki.server(),
                              applications=TEST_APPS)
    lines = run_probe(start_server, "echo", f"wss://localhost:{tls_target.port}/echo",
                      server={"tls_client_verify": False, "fast_path": fast_path,
                              "tls_certificates": {"ca": str(stranger.ca)}})
    assert_echo_flow(lines)


def test_a_server_close_calls_onclose_with_the_payload(start_server, target):
    lines = run_probe(start_server, "serverclose", target.url("/probe"))
    assert lines == ["new ok", "onopen true", "onclose 4001 bye true",
                     "send after close false Communication error: the connection is closed true",
                     "done"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, expected", [
    ("ws://127.0.0.1:{free}/echo", "new failed: Can't create socket: ConnectionRefusedError"),
    ("ws://nonexistent.invalid/echo", "new failed: Can't create socket: DNSLookupError"),
    ("http://127.0.0.1/echo", "new failed: Invalid schema: only ws:// and wss:// are supported"),
])
def test_failures_come_back_as_messages(start_server, target, url, expected):
    url = url.format(free=_free_port(), target=target.url("").rstrip("/"))
    [line] = run_probe(start_server, "connect", url)
    assert line.startswith(expected)


def test_a_failed_upgrade_is_an_onerror_inside_eventloop(start_server, target):
    """As in LAppS: cws:new has returned once the TCP connection is made;
    the server's refusal of the upgrade comes later, to onerror."""
    lines = run_probe(start_server, "connect", target.url("/nowhere"))
    assert lines[0] == "new ok" and lines[2] == "done"
    assert lines[1].startswith("onerror Communication error on HTTP Upgrade Request (")
    assert lines[1].endswith(" true")


def test_a_reactive_service_uses_cws_without_blocking(start_server, target):
    server = start_server({"cwsreactive": reactive("/cwsreactive", preload=["cws"]),
                           "echo": reactive("/echo")}, applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/cwsreactive")) as ws, \
                websockets.connect(server.url("/echo")) as other:
            await ws.send(f"connect {target.url('/echo')}")
            assert await ws.recv() == "connected"
            await other.send("still served")
            assert await other.recv() == "still served"
            seen = []
            for _ in range(200):  # callbacks run only when the service polls
                await ws.send("poll")
                seen += [e for e in (await ws.recv()).split(",") if e]
                if "message:ping" in seen:
                    return seen
        return seen

    assert asyncio.run(go()) == ["open", "message:ping"]


class _Remote:
    """A cws connection as the pool sees it, whose transport is not full."""

    outbound_backlog = 0
    state = STATE_OPEN = 3

    def __init__(self):
        self.sent = []

    def sendMessage(self, data, is_binary):
        self.sent.append((data, is_binary))


def test_a_send_bigger_than_the_send_buffer_goes_when_none_waits():
    """Rather than refused forever; while it waits for the reactor, the
    next is refused; once written, sending works again. (Sends come from a
    standalone's thread; the reactor here runs one turn when the test says.)"""
    from twisted.internet.selectreactor import SelectReactor
    from lapps.lua.cws import MAX_SEND_BUFFER, Pool
    reactor = SelectReactor()
    pool = Pool(reactor, None, {}, may_block=True)
    remote = pool.protocols[1] = _Remote()
    pool.open.add(1)

    def send(data):
        results = []
        thread = threading.Thread(target=lambda: results.append(pool.send(1, data, 2)))
        thread.start()
        thread.join()
        return results[0]

    big = b"b" * (MAX_SEND_BUFFER + 1)
    assert send(big) is True
    assert send(b"s") == (False, b"send buffer full: the server is not taking what was sent")
    reactor.runUntilCurrent()
    assert remote.sent == [(big, True)]
    assert send(b"s") is True


def many(target_url, count, **descriptor):
    return {"cwsmany": {"standalone": True, "auto_start": True, "instances": 1,
                        "preload": ["cws", "nap", "time"],
                        "settings": {"target": target_url, "max_connections": count},
                        **descriptor}}


def test_400_verified_wss_sockets_open_from_one_instance(start_server, tmp_path):
    """cws:new returns once TCP is connected; the handshakes go on together
    and every onopen runs inside cws:eventLoop(), as in LAppS."""
    pki = PKI(tmp_path / "server")
    tls_target = start_server({"echo": reactive("/echo", instances=2)}, server=pki.server(),
                              applications=TEST_APPS)
    client = start_server(many(f"wss://localhost:{tls_target.port}/echo", 400),
                          server={"tls_certificates": {"ca": str(pki.ca)}},
                          applications=TEST_APPS)
    client.wait_for(r"^Sockets connected: 400$", timeout=60)
    client.wait_for(r"^cwsmany: open 400 failed 0 outside eventLoop 0$", timeout=60)
    assert client.count("Warning") == 0  # (the system trust store's old roots)


@pytest.mark.parametrize("service", ["cwsmany", "benchmark"])
def test_the_lapps_benchmark_pattern_connects_every_socket_then_measures(start_server, target,
                                                                           service):
    """800 sockets (LAppS's demo, per instance) for the pattern of spec
    §7.2; apps/benchmark with the count etc/benchmark-ws.json gives it.
    Stopped under full load, the server logs no unhandled error."""
    if service == "cwsmany":
        services, count = many(target.url("/echo"), 800), 800
    else:
        count = 100
        services = {"benchmark": {
            "standalone": True, "auto_start": True, "instances": 1,
            "preload": ["nap", "cws", "time"],
            "settings": {"target": target.url("/echo"), "connections": count,
                         "message_size": 1024}}}
    client = start_server(services, applications=TEST_APPS if service == "cwsmany" else APPS)
    client.wait_for(rf"^Sockets connected: {count}$", timeout=60)
    rate = client.wait_for(r"^(\d+) messages rece(i)?ved per (\d+)ms$", timeout=30)
    assert int(rate.group(1)) > 0
    assert client.stop() == -signal.SIGTERM  # twistd exits by the signal it got
    assert client.count("Unhandled Error|Traceback") == 0
    assert client.count("is failed for socketfd|Connection is closed") == 0


def test_a_connection_reset_before_the_reactor_adopts_it_is_an_onerror():
    """A standalone instance connects in its own thread; if the server
    resets the connection before the reactor takes it over, the service
    hears of it in onerror, and nothing raises on the reactor."""
    from twisted.internet.selectreactor import SelectReactor
    from lapps.lua.cws import Pool
    reactor = SelectReactor()
    pool = Pool(reactor, None, {}, may_block=True)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        handler = pool.start(f"ws://127.0.0.1:{listener.getsockname()[1]}/echo".encode())
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # a reset
        reactor.runUntilCurrent()  # the adoption the start scheduled
    assert pool.wait(handler) == (True, None)
    assert pool.next_event(False) == (b"error", handler,
                                      b"Communication error, socket closed by peer", None)
    assert pool.send(handler, b"late", 2) == (False,
                                              b"Communication error: the connection is closed")
