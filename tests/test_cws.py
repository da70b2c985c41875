"""cws, the Lua WebSocket client, against lapps servers over ws and wss."""

import asyncio
import socket
import threading

import pytest
import websockets

from conftest import TEST_APPS, reactive
from lapps import devcert
from test_tls import PKI, write_pem


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


def test_wss_verified_against_the_configured_ca(start_server, tmp_path):
    pki = PKI(tmp_path / "server")
    tls_target = start_server({"echo": reactive("/echo")}, server=pki.server(),
                              applications=TEST_APPS)
    lines = run_probe(start_server, "echo", f"wss://localhost:{tls_target.port}/echo",
                      server={"tls_certificates": {"ca": str(pki.ca)}})
    assert_echo_flow(lines)


def test_wss_with_an_unknown_ca_is_refused(start_server, tmp_path):
    pki, stranger = PKI(tmp_path / "server"), PKI(tmp_path / "stranger")
    tls_target = start_server({"echo": reactive("/echo")}, server=pki.server(),
                              applications=TEST_APPS)
    [line] = run_probe(start_server, "connect", f"wss://localhost:{tls_target.port}/echo",
                       server={"tls_certificates": {"ca": str(stranger.ca)}})
    assert line.startswith("new failed: Can't create socket:")
    assert "certificate verify failed" in line


def test_wss_hostname_mismatch_is_refused(start_server, tmp_path):
    ca_cert, ca_key = devcert.make_ca()
    cert, key = devcert.make_server_cert(ca_cert, ca_key, hostnames=("other.example",), addresses=())
    ca = write_pem(tmp_path / "ca.pem", devcert.pem_cert(ca_cert))
    write_pem(tmp_path / "cert.pem", devcert.pem_cert(cert))
    write_pem(tmp_path / "key.pem", devcert.pem_key(key))
    tls_target = start_server({"echo": reactive("/echo")}, applications=TEST_APPS, server={
        "tls": True, "tls_certificates": {"ca": str(ca), "cert": str(tmp_path / "cert.pem"),
                                          "key": str(tmp_path / "key.pem")}})
    [line] = run_probe(start_server, "connect", f"wss://localhost:{tls_target.port}/echo",
                       server={"tls_certificates": {"ca": str(ca)}})
    assert line.startswith("new failed: Can't create socket:")
    assert "localhost" in line or "hostname" in line.lower()


def test_verification_can_be_turned_off(start_server, tmp_path):
    pki, stranger = PKI(tmp_path / "server"), PKI(tmp_path / "stranger")
    tls_target = start_server({"echo": reactive("/echo")}, server=pki.server(),
                              applications=TEST_APPS)
    lines = run_probe(start_server, "echo", f"wss://localhost:{tls_target.port}/echo",
                      server={"tls_client_verify": False,
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
    ("{target}/nowhere", "new failed: Can't create socket: fail on connection upgrade"),
])
def test_failures_come_back_as_messages(start_server, target, url, expected):
    url = url.format(free=_free_port(), target=target.url("").rstrip("/"))
    [line] = run_probe(start_server, "connect", url)
    assert line.startswith(expected)


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


def test_the_benchmark_service_prints_its_rate(start_server, target):
    bench = start_server({"benchmark": {
        "standalone": True, "auto_start": True, "instances": 1,
        "preload": ["nap", "cws", "time"],
        "settings": {"target": target.url("/echo"), "connections": 5, "message_size": 1024}}})
    bench.wait_for(r"^Sockets connected: 5$")
    rate = bench.wait_for(r"^(\d+) messages received per (\d+)ms$")
    assert int(rate.group(1)) > 0 and int(rate.group(2)) >= 1000


class _Remote:
    """A cws connection as the pool sees it, whose transport is not full."""

    outbound_backlog = 0

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
