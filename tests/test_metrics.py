"""Prometheus metrics (``lapps.metrics``): scraped with prometheus_client's
parser while real clients connect, send, fail handshakes and close, each
counter moves by exactly what was done.

The server runs embedded in a small host program that serves
``metrics.exposition()`` over HTTP, as the admin listener does; one test
scrapes the admin listener itself."""

import asyncio
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import cbor2
import pytest
import websockets
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from conftest import APPS, TEST_APPS, Server, call, reactive, subscribe, write_config
from redis_server import RedisServer, free_port
from support.jsonlog import events
from support.peers import acl
from support.pki import PKI
from support.raw import raw_exchange, read_until_closed, request_head

from lapps.metrics import latency

HOST = """
    import sys
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, jsonFileLogObserver
    from twisted.web import resource, server
    from lapps import metrics
    from lapps.app import LAppSService

    class Scrape(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            body, content_type = metrics.exposition()
            request.setHeader("Content-Type", content_type)
            return body

    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout, recordSeparator="")])
    lapps = LAppSService(sys.argv[1])
    lapps.startService()
    site = reactor.listenTCP(0, server.Site(Scrape()), interface="127.0.0.1")
    print("metrics at", site.getHost().port, flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", lapps.stopService)
    reactor.run()
"""

JSON_LISTENING = re.compile(r'"lapps_event": "listener\.up".*"host": "([^"]+)", "port": (\d+)')
JSON_READY = re.compile(r'"lapps_event": "server\.ready"')


class Scrape:
    """One scrape: ``scrape(name, **labels)`` is a sample's value (0 if absent)."""

    def __init__(self, text):
        self.text = text
        self.values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[sample.name, tuple(sorted(sample.labels.items()))] = sample.value

    def __call__(self, name, **labels):
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def labelled(self, name):
        """label dict → value, for every sample called ``name``."""
        return {labels: value for (sample, labels), value in self.values.items()
                if sample == name}


def scrape_url(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        return Scrape(answer.read().decode())


class Host(Server):
    """LAppSService embedded in the host program above, logging JSON lines."""

    def __init__(self, config, env=None):
        script = config.parent / "host.py"
        script.write_text(textwrap.dedent(HOST))
        super().__init__(config, env=env, argv=[sys.executable, str(script), str(config)],
                         listening=JSON_LISTENING, ready=JSON_READY)
        self.metrics_port = int(self.wait_for(r"metrics at (\d+)").group(1))

    def scrape(self):
        return scrape_url(f"http://127.0.0.1:{self.metrics_port}/")

    def scrape_until(self, condition, timeout=15.0):
        """Scrape until ``condition(scrape)`` holds; return that scrape."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.scrape()
            if condition(found):
                return found
            assert time.monotonic() < deadline, f"never true; last scrape:\n{found.text}"
            time.sleep(0.05)  # polling a condition, with a deadline


@pytest.fixture
def host(tmp_path, reap):
    def start(services, server=None, applications=TEST_APPS, env=None):
        return reap(Host(write_config(tmp_path, services, server, applications), env))

    return start


def delta(before, after, name, **labels):
    return after(name, **labels) - before(name, **labels)


def ws_frames(*payloads):
    """Wire size of masked client frames with these payloads (each < 126 bytes)."""
    return sum(6 + len(p) for p in payloads)


# --- connections, messages, close codes, handshakes ------------------------------------

def test_counters_move_by_exactly_what_clients_did(host, tmp_path):
    services = {"probe": reactive("/probe"),
                "echo": reactive("/echo", **acl("deny", "127.0.0.2"))}  # 127.0.0.1 denied
    server = host(services, {"limits": {"max_request_line": 256, "max_header_line": 300}})
    before = server.scrape()
    sent_a = [b"who a1", b"who a2", b"who a3"]

    async def clients():
        a = await websockets.connect(server.url("/probe"))
        for message in sent_a:
            await a.send(message)
            assert (await a.recv()).startswith("0x")
        during = await asyncio.to_thread(server.scrape)
        b = await websockets.connect(server.url("/probe"))
        await b.send(b"who b")
        await b.recv()
        await b.send(b"boom")
        with pytest.raises(websockets.ConnectionClosed):
            await b.recv()
        await a.close()
        for path, status in (("/nowhere", 404), ("/echo", 403)):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(server.url(path))
            assert refused.value.response.status_code == status
        return during

    during = asyncio.run(clients())
    assert during("lapps_connections_open", service="probe") == 1
    assert during("lapps_connections_open", service="echo") == 0
    for request, status in ((request_head(version="12") + b"\r\n", b" 426 "),
                            (request_head() + b"X-Long: " + b"a" * 400, b" 431 "),
                            (b"GET /probe?" + b"q" * 300, b" 414 ")):
        assert status in raw_exchange("127.0.0.1", server.port, request).split(b"\r\n")[0]
    with socket.create_connection(("127.0.0.1", server.port)):
        pass  # connected, then gone without a byte

    after = server.scrape_until(
        lambda s: s("lapps_connections_open", service="probe") == 0
        and delta(before, s, "lapps_handshakes_total", result="dropped") == 1
        and delta(before, s, "lapps_close_codes_sent_total", service="probe", code="1000") == 1)
    moved = {dict(labels)["result"]: value - before("lapps_handshakes_total", **dict(labels))
             for labels, value in after.labelled("lapps_handshakes_total").items()}
    assert {k: v for k, v in moved.items() if v} == {
        "101": 2, "404": 1, "acl_denied": 1, "426": 1, "431": 1, "414": 1, "dropped": 1}

    probe = {"service": "probe"}
    assert delta(before, after, "lapps_messages_received_total", **probe) == 3 + 2
    assert delta(before, after, "lapps_messages_sent_total", **probe) == 3 + 1
    assert delta(before, after, "lapps_message_handler_seconds_count", **probe) == 3 + 2
    assert delta(before, after, "lapps_message_handler_seconds_sum", **probe) > 0
    assert delta(before, after, "lapps_lua_errors_total", **probe) == 1
    assert delta(before, after, "lapps_close_codes_sent_total", code="1000", **probe) == 1
    assert delta(before, after, "lapps_close_codes_sent_total", code="1011", **probe) == 1
    assert delta(before, after, "lapps_close_codes_received_total", code="1000", **probe) == 1
    assert delta(before, after, "lapps_close_codes_received_total", code="1011", **probe) == 1

    # bytes are the wire bytes of the access log: the same numbers, added up
    server.wait_for(r'"lapps_event": "connection\.close"', count=2)
    closes = [e for e in events(server) if e["lapps_event"] == "connection.close"]
    assert delta(before, after, "lapps_bytes_received_total", **probe) == \
        sum(e["bytes_in"] for e in closes)
    assert delta(before, after, "lapps_bytes_sent_total", **probe) == \
        sum(e["bytes_out"] for e in closes)
    # ... which hold at least the data frames the clients sent
    assert sum(e["bytes_in"] for e in closes) >= ws_frames(*sent_a, b"who b", b"boom")
    assert after("lapps_outbound_buffer_bytes") == 0


def test_refusals_at_accept_are_counted(host):
    server = host({"probe": reactive("/probe")},
                  {**acl("deny", "127.0.0.1"),
                   "limits": {"peer_max_connections": 1, "peer_exempt": []}})
    before = server.scrape()
    upgrade = request_head("/probe") + b"\r\n"
    assert raw_exchange("127.0.0.3", server.port, upgrade) == b""  # global ACL

    async def over_the_peer_limit():
        async with websockets.connect(server.url("/probe")):
            return await asyncio.to_thread(raw_exchange, "127.0.0.1", server.port, upgrade)

    assert asyncio.run(over_the_peer_limit()) == b""
    after = server.scrape_until(lambda s: s("lapps_connections_open", service="probe") == 0)
    assert delta(before, after, "lapps_handshakes_total", result="acl_denied") == 1
    assert delta(before, after, "lapps_handshakes_total", result="peer_limit") == 1
    assert delta(before, after, "lapps_handshakes_total", result="101") == 1


def test_tls_failures_and_handshake_timeouts_are_counted(host, tmp_path):
    pki = PKI(tmp_path)
    server = host({"probe": reactive("/probe")},
                  pki.server(limits={"handshake_timeout": 0.5}))
    before = server.scrape()
    # plain HTTP to the TLS port: not a TLS record
    assert raw_exchange("127.0.0.1", server.port, request_head("/probe") + b"\r\n") == b""
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        idle.settimeout(10)
        assert read_until_closed(idle) == b""  # cut at handshake_timeout
    after = server.scrape_until(
        lambda s: delta(before, s, "lapps_handshakes_total", result="timeout") == 1)
    assert delta(before, after, "lapps_handshakes_total", result="tls_failed") == 1
    assert delta(before, after, "lapps_handshakes_total", result="dropped") == 0


# --- Lua containment ------------------------------------------------------------------

def test_timeouts_memory_hits_and_rebuilds_are_counted(host):
    server = host({"contained": reactive("/contained", handler_timeout=0.3,
                                         max_memory=32 * 1024 * 1024)})
    before = server.scrape()

    async def misbehave(command):
        async with websockets.connect(server.url("/contained"), max_size=None) as ws:
            await ws.send(command)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(misbehave("loop")) == 1011
    assert asyncio.run(misbehave("grow")) == 1011
    after = server.scrape_until(
        lambda s: delta(before, s, "lapps_instance_rebuilds_total", service="contained") == 1)
    contained = {"service": "contained"}
    assert delta(before, after, "lapps_lua_timeouts_total", **contained) == 1
    assert delta(before, after, "lapps_memory_cap_hits_total", **contained) == 1
    assert delta(before, after, "lapps_lua_errors_total", **contained) == 1  # out of memory


def test_pam_answers_are_counted_by_result(host):
    server = host({"pamprobe": reactive("/pamprobe", protocol="LAppS", preload=["pam_auth"])},
                  {"pam_auth": {"services": ["lapps"]}})
    before = server.scrape()

    async def refused_login():
        async with websockets.connect(server.url("/pamprobe")) as ws:
            await ws.send(call("login", "sshd", "someone", "secret"))  # not an allowed service
            return cbor2.loads(await ws.recv())["result"]

    assert asyncio.run(refused_login()) == [False, "PAM service not allowed"]
    after = server.scrape()
    assert delta(before, after, "lapps_pam_logins_total", result="pam_service_not_allowed") == 1
    assert delta(before, after, "lapps_pam_logins_total", result="ok") == 0


# --- levels read at the scrape --------------------------------------------------------

def test_bcast_subscribers_mqr_depth_and_outbound_buffer(host):
    server = host({"lprobe": reactive("/lprobe", protocol="LAppS"),
                   "mqprobe": reactive("/mq", preload=["mqr"]),
                   "blaster": reactive("/blaster", protocol="LAppS",
                                       max_outbound_buffer=256 * 1024 * 1024,
                                       handler_timeout=30.0)})
    blob, count = 64 * 1024, 400  # 25 MiB: more than loopback's socket buffers hold

    async def scenario():
        first = await subscribe(server.url("/lprobe"), 41)
        second = await subscribe(server.url("/lprobe"), 41)
        subscribed = await asyncio.to_thread(
            server.scrape_until, lambda s: s("lapps_bcast_subscribers", channel="41") == 2)
        await second.close()
        await asyncio.to_thread(
            server.scrape_until, lambda s: s("lapps_bcast_subscribers", channel="41") == 1)
        await first.close()

        async with websockets.connect(server.url("/mq")) as mq:
            for n in range(3):
                await mq.send(f"postraw depthq item{n}")
                assert await mq.recv() == "true nil"
        queued = await asyncio.to_thread(server.scrape)

        reader = await subscribe(server.url("/blaster"), 42)  # then reads nothing for a while
        async with websockets.connect(server.url("/blaster")) as producer:
            await producer.send(call("blast", 42, 1, count, blob))
            await producer.recv()
        full = await asyncio.to_thread(
            server.scrape_until, lambda s: s("lapps_outbound_buffer_bytes") > 0)
        for _ in range(count):
            await reader.recv()
        drained = await asyncio.to_thread(
            server.scrape_until, lambda s: s("lapps_outbound_buffer_bytes") == 0)
        await reader.close()
        return subscribed, queued, full, drained

    subscribed, queued, full, drained = asyncio.run(scenario())
    assert subscribed("lapps_bcast_subscribers", channel="41") == 2
    assert queued("lapps_mqr_queue_depth", queue="depthq") == 3
    assert 0 < full("lapps_outbound_buffer_bytes") <= blob * count + 1024 * count
    # the bcast deliveries, each counted once, and the replies to subscribe and blast
    assert drained("lapps_messages_sent_total", service="blaster") == count + 2


def test_bus_state_follows_redis(host, tmp_path):
    redis = RedisServer(tmp_path).start()
    try:
        bus = {"backend": "redis", "url": redis.url, "prefix": "metrics-test:"}
        server = host({"mqprobe": reactive("/mq", preload=["mqr"])}, {"bus": bus})
        server.scrape_until(lambda s: s("lapps_bus_up", backend="redis") == 1)
        redis.stop()
        server.scrape_until(lambda s: s("lapps_bus_up", backend="redis") == 0)
        redis.start()
        server.scrape_until(lambda s: s("lapps_bus_up", backend="redis") == 1)
    finally:
        redis.stop()


# --- the histogram fold ---------------------------------------------------------------

@pytest.mark.parametrize("times_ns", [
    [0, 1, 1023, 1024, 1025, 4096, 4097, 50_000, 2 ** 20, 3 * 10 ** 9, 2 ** 32, 2 ** 32 + 1,
     10 ** 12],
    list(range(0, 5_000_000, 997)),
])
def test_folded_latencies_equal_observed_ones(times_ns):
    """Latency.add + fold give a Histogram the samples observe() would have."""
    registry = CollectorRegistry()
    folded = Histogram("folded", "", ["service"], registry=registry, buckets=latency.BOUNDS)
    observed = Histogram("observed", "", ["service"], registry=registry, buckets=latency.BOUNDS)
    accumulator = latency.Latency()
    for ns in times_ns:
        accumulator.add(ns)
        observed.labels("s").observe(ns / 1e9)
    latency.fold(accumulator, folded.labels("s"))
    latency.fold(accumulator, folded.labels("s"))  # started over: adds nothing
    samples = {name: [(s.name.split("_", 1)[1], s.labels, s.value) for s in family.samples
                      if not s.name.endswith("_created")]
               for family in registry.collect() for name in [family.name]}
    assert [s[:2] for s in samples["folded"]] == [s[:2] for s in samples["observed"]]
    for (name, labels, got), (_, _, want) in zip(samples["folded"], samples["observed"]):
        assert got == pytest.approx(want, rel=1e-9), (name, labels)


# --- worker processes: their metrics added up ---------------------------------------------

WRITER = """
    import os, sys
    from lapps import metrics
    metrics.lua_errors.labels("probe").inc(int(sys.argv[1]))
    metrics.connections_open.labels("probe").set(int(sys.argv[1]))
    metrics.handshakes.labels("101").inc()
    print(os.getpid(), flush=True)
"""


def test_supervisor_adds_up_the_workers(tmp_path, monkeypatch):
    """Two processes with the supervisor's environment write their metrics;
    the supervisor's exposition adds them up, with its own worker restarts,
    and a dead worker's live gauges stop counting."""
    from lapps import metrics
    directory = tmp_path / "metrics"
    directory.mkdir()
    monkeypatch.setattr(metrics, "_workers_dir", None)
    env = dict(os.environ, **metrics.multiprocess_env(directory))
    pids = [int(subprocess.run([sys.executable, "-c", textwrap.dedent(WRITER), str(n)],
                               env=env, check=True, capture_output=True, text=True).stdout)
            for n in (2, 3)]
    restarts = metrics.worker_restarts._value.get()
    metrics.worker_restarted()
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    scrape = Scrape(body.decode())
    assert scrape("lapps_lua_errors_total", service="probe") == 5
    assert scrape("lapps_handshakes_total", result="101") == 2
    assert scrape("lapps_worker_restarts_total") == restarts + 1
    # both writers have exited: livesum gauges count live processes only once marked
    assert metrics.open_connections() == {"probe": 5}
    metrics.worker_exited(pids[0])
    assert metrics.open_connections() == {"probe": 3}
    assert Scrape(metrics.exposition()[0].decode())("lapps_lua_errors_total",
                                                    service="probe") == 5


def test_a_worker_folds_its_numbers_into_its_files(host, tmp_path, monkeypatch):
    """A server started with the supervisor's environment writes what it
    reads and accumulates (messages, open connections, Lua call times) every
    FOLD_INTERVAL and at its stop, so the supervisor's exposition sees them."""
    from lapps import metrics
    directory = tmp_path / "metrics"
    directory.mkdir()
    monkeypatch.setattr(metrics, "_workers_dir", None)
    server = host({"probe": reactive("/probe")}, env=metrics.multiprocess_env(directory))

    def aggregated_until(condition):
        deadline = time.monotonic() + 15
        while True:
            found = Scrape(metrics.exposition()[0].decode())
            if condition(found):
                return found
            assert time.monotonic() < deadline, found.text
            time.sleep(0.05)  # polling a condition, with a deadline

    async def clients():
        async with websockets.connect(server.url("/probe")) as ws:
            for n in range(3):
                await ws.send(f"who {n}")
                await ws.recv()
            # (a fold writes one value after another: wait for both)
            await asyncio.to_thread(aggregated_until, lambda s: s(
                "lapps_messages_received_total", service="probe") == 3 and s(
                "lapps_connections_open", service="probe") == 1)
            assert metrics.open_connections() == {"probe": 1}
            await ws.send("who last")
            await ws.recv()

    asyncio.run(clients())
    server.stop()  # the last message is written at the stop, within the second
    found = Scrape(metrics.exposition()[0].decode())
    probe = {"service": "probe"}
    assert found("lapps_messages_received_total", **probe) == 4
    assert found("lapps_messages_sent_total", **probe) == 4
    assert found("lapps_message_handler_seconds_count", **probe) == 4
    assert found("lapps_handshakes_total", result="101") == 1
    assert found("lapps_close_codes_received_total", code="1000", **probe) == 1
    metrics.worker_exited(server.process.pid)
    assert metrics.open_connections() == {}


# --- the admin listener -------------------------------------------------------------------

def test_admin_listener_serves_the_metrics(tmp_path):
    port = free_port()
    config = write_config(tmp_path, {"echo": reactive("/echo")},
                          {"admin": {"ip": "127.0.0.1", "port": port}}, applications=APPS)
    server = Server(config)
    try:
        server.wait_for(r"admin interface on http://127\.0\.0\.1:\d+/")
        before = scrape_url(f"http://127.0.0.1:{port}/metrics")

        async def echo():
            async with websockets.connect(server.url("/echo")) as ws:
                await ws.send(b"hello")
                assert await ws.recv() == b"hello"

        asyncio.run(echo())
        after = scrape_url(f"http://127.0.0.1:{port}/metrics")
        assert delta(before, after, "lapps_handshakes_total", result="101") == 1
        assert delta(before, after, "lapps_messages_received_total", service="echo") == 1
    finally:
        server.stop()
