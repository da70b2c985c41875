"""Lua globals by service kind and preload (spec §3.1), and the small
modules: time, murmur, nap."""

import asyncio

import cbor2
import pytest
import websockets

from conftest import TEST_APPS, reactive


def globals_of(server):
    async def go():
        async with websockets.connect(server.url("/lprobe")) as ws:
            await ws.send(cbor2.dumps({"lapps": 1, "method": "globals"}))
            return cbor2.loads(await ws.recv())["result"]
    return dict(item.split("=") for item in asyncio.run(go()))


def test_lapps_service_without_preload(start_server):
    server = start_server({"lprobe": reactive("/lprobe", protocol="LAppS")}, applications=TEST_APPS)
    assert globals_of(server) == {
        "nljson": "table", "ws": "table", "bcast": "table", "instance_id": "nil",
        "must_stop": "nil", "nap": "nil", "time": "nil", "murmur": "nil", "pam_auth": "nil",
        "mqr": "nil", "cws": "nil", "python": "nil"}


def test_preload_adds_exactly_the_named_modules(start_server):
    server = start_server({"lprobe": reactive("/lprobe", protocol="LAppS",
                                              preload=["time", "murmur"])}, applications=TEST_APPS)
    seen = globals_of(server)
    assert (seen["time"], seen["murmur"], seen["nap"]) == ("table", "table", "nil")


def test_raw_service_has_ws_and_nljson_but_no_bcast(start_server):
    server = start_server({"probe": reactive("/probe")}, applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/probe")) as ws:
            await ws.send("globals")
            return await ws.recv()

    assert asyncio.run(go()) == "ws=table bcast=nil nljson=table must_stop=nil nap=nil"


@pytest.fixture
def lua():
    """A standalone-kind runtime with time, murmur and nap preloaded."""
    from twisted.internet import reactor
    from lapps.lua import modules
    from lapps.lua.runtime import new_runtime
    from lapps.bus.local.bcast import Broadcasts
    from lapps.services.lua_service import ServerParts
    import threading
    runtime = new_runtime(64 * 1024 * 1024, "")
    stop = threading.Event()
    parts = ServerParts("", {}, Broadcasts({}, reactor, 1 << 20), reactor, client_tls=None)
    modules.install(modules.Context(runtime, parts, standalone=True, block=stop.wait,
                                    must_stop=stop.is_set, instance_id="7"),
                    ["time", "murmur", "nap"])
    return runtime


@pytest.mark.parametrize("text, digest", [
    (b"", "553e93901e462a6e"), (b"hello", "26553298fdbe39c8"),
    (b"0123456789abcdef", "934b0d760642ed86"), (b"The quick brown fox jumps", "6c8af4c4c948b335"),
])
def test_murmur_matches_libstdcxx_std_hash(lua, text, digest):
    """Digests of libstdc++'s std::hash<std::string> (g++ 12, x86_64)."""
    assert lua.execute(b"return murmur.hashstr(...)", text) == digest.encode()
    assert lua.execute(b"return murmur.hashnum(...)", text) == float(int(digest, 16))


def test_murmur_of_a_number_is_its_truncated_value(lua):
    assert lua.execute(b"return murmur.hashstr(123456789.7)") == b"00000000075bcd15"
    assert lua.execute(b"return pcall(murmur.hashstr, {})")[0] is False


def test_time_now_is_epoch_milliseconds(lua):
    import time
    before = time.time() * 1000
    now = lua.execute(b"return time.now()")
    assert before - 1 <= now <= time.time() * 1000 + 1 and now == int(now)


def test_nap_sleeps_and_checks_its_arguments(lua):
    import time
    start = time.monotonic()
    assert lua.execute(b"return nap:new():usleep(50000)") is None
    assert time.monotonic() - start >= 0.05
    assert lua.execute(b"return nap:new():sleep(-1)") == \
        b"usage: sleeper:sleep(seconds), an unsigned integer"
    assert lua.execute(b"return nap:new():nsleep(1.5)") == \
        b"usage: sleeper:nsleep(nanoseconds), an unsigned integer"
