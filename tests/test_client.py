"""lapps.client, the Python LAppS-protocol client, against a real server
running the shipped echo_lapps service (etc/echo_lapps.json), and its
reconnection through a proxy that cuts connections, against echo_lapps and
the test services lhistory and hticker (history channel 61)."""

import asyncio
import json

import pytest

from conftest import REPO, TEST_APPS, Server, reactive, standalone, write_config
from lapps.client import ConnectionClosedError, LAppSError, connect, validate_method
from support.proxy import Proxy

SERVICES = json.loads((REPO / "etc" / "echo_lapps.json").read_text())["services"]
ADMIN = {"user": "admin", "password": "admin"}
PAYLOAD = list(range(1, 26))
TIMEOUT = 30.0

#: A LAppS service that answers nothing; the CN "close" makes it close the
#: connection with 4000, so a request can be left pending deterministically.
SILENT_LUA = """
silent = {}
function silent.onStart() end
function silent.onMessage(handler, msg_type, message)
  if (msg_type == 1 or msg_type == 2) and message.method == "close" then
    ws:close(handler, 4000, "asked to close")
  end
  return true
end
function silent.onDisconnect(handler) end
function silent.onShutdown() end
return silent
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One echo_lapps server (port 0) for the module; stopped by pid."""
    s = Server(write_config(tmp_path_factory.mktemp("echo_lapps"), SERVICES))
    s.wait_started(SERVICES)
    yield s
    try:
        s.stop()
    finally:
        if s.process.poll() is None:
            s.process.kill()
            s.process.wait()


@pytest.fixture
def url(server):
    return server.url("/echo_lapps")


def run(coroutine):
    """Run a test coroutine, failing it after TIMEOUT seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


async def login(client):
    result = await client.request("login", [ADMIN])
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


def test_login_returns_an_authkey(url):
    async def go():
        async with connect(url) as client:
            session = await login(client)
        other = await connect(url)          # the plain-await form
        try:
            second = await login(other)
        finally:
            await other.close()
        return session, second

    session, second = run(go())
    assert set(session) == {"authkey"}
    assert isinstance(session["authkey"], str) and len(session["authkey"]) >= 16
    assert session["authkey"] != second["authkey"]


ECHOED = [
    [PAYLOAD],
    [],
    [0, 1, -1, 23, 24, -24, -25, 255, 256, 65535, 65536, 2**32, -2**32, 2**53, -2**53],
    [1.5, -0.25, 3.141592653589793, 1e300, -1e-300],
    ["", "ascii", "é€😀 ключ", "x" * 5000],
    [True, False, None],
    [{}, [], {"a": {"b": [1, {"c": []}]}}, [[[[]]]]],
    [{"nested": {"list": [1, "two", 3.5, None, {"deep": [True]}]}}],
    [list(range(1000))],
    [{"k%d" % i: i for i in range(50)}],
    [[1, 2, 3], "tail"],
    [-7, "mixed", [0.5, {"z": False}]],
]


def test_echo_returns_the_params_exactly(url):
    async def go():
        async with connect(url) as client:
            session = await login(client)
            seen = []
            for extra in ECHOED:
                params = [session, *extra]
                seen.append((params, await client.request("echo", params)))
            return seen

    seen = run(go())
    assert len(seen) >= 10
    for sent, got in seen:
        assert got == sent
        assert_same_types(got, sent)


def assert_same_types(got, sent):
    """Integers stay integers, floats stay floats, bools stay bools, all the
    way down (``==`` alone would take 1.0 for 1 and True for 1)."""
    assert type(got) is type(sent), (got, sent)
    if isinstance(sent, list):
        for g, s in zip(got, sent):
            assert_same_types(g, s)
    elif isinstance(sent, dict):
        for key in sent:
            assert_same_types(got[key], sent[key])


def test_pipelined_requests_are_answered_in_order(url):
    async def go():
        async with connect(url) as client:
            session = await login(client)
            params = [[session, i, "x" * (i * 37 % 500)] for i in range(40)]
            results = await asyncio.gather(*(client.request("echo", p) for p in params))
            return params, results

    params, results = run(go())
    assert results == params


def test_a_wrong_password_is_error_10(url):
    async def go():
        async with connect(url) as client:
            with pytest.raises(LAppSError) as info:
                await client.request("login", [{"user": "admin", "password": "wrong"}])
            await client.wait_closed()      # the service closes with 1000
            with pytest.raises(ConnectionClosedError):
                await client.request("login", [ADMIN])
            return info.value, client.close_code

    error, close_code = run(go())
    assert error.code == 10
    assert error.message == "Authentication error"
    assert close_code == 1000


def test_echo_without_login_is_error_minus_32000(url):
    async def go():
        async with connect(url) as client:
            with pytest.raises(LAppSError) as info:
                await client.request("echo", [{"authkey": "guess"}, PAYLOAD])
            await client.wait_closed()
            return info.value, client.close_code

    error, close_code = run(go())
    assert error.code == -32000
    assert error.message == "Not authenticated. Permission denied"
    assert close_code == 1000


def test_an_unknown_method_is_error_minus_32601(url):
    async def go():
        async with connect(url) as client:
            await login(client)
            with pytest.raises(LAppSError) as info:
                await client.request("nosuchmethod", [1])
            await client.wait_closed()
            return info.value, client.close_code

    error, close_code = run(go())
    assert error.code == -32601
    assert error.message == "No such method"
    assert close_code == 1003


def test_server_time_arrives_on_cid_5_between_responses(url):
    """Subscribing on cid 5 brings server-time OONs to on_message, while
    echo responses keep their order."""
    async def go():
        async with connect(url) as client:
            session = await login(client)
            times, removed_calls = [], []
            two = asyncio.Event()

            def on_time(message):
                times.append(message)
                if len(times) >= 2:
                    two.set()

            client.on_message(5, on_time)
            remove = client.on_message(5, removed_calls.append)
            remove()
            await client.notify("subscribe", [session], cid=5)
            echoes = 0
            while not two.is_set():          # echo until two pushes have arrived
                params = [session, echoes, PAYLOAD]
                assert await client.request("echo", params) == params
                echoes += 1
            return times, removed_calls, echoes

    times, removed_calls, echoes = run(go())
    assert len(times) >= 2
    for message in times:
        assert isinstance(message, list) and len(message) == 1, message
        assert isinstance(message[0], str) and message[0].startswith("Server time: "), message
    assert removed_calls == []
    assert echoes > 0


def test_the_blob_arrives_on_cid_6_only(url):
    async def go():
        async with connect(url) as client:
            session = await login(client)
            blobs, times = [], []
            arrived = asyncio.Event()
            client.on_message(5, times.append)

            async def on_blob(message):        # a coroutine callback runs as a task
                blobs.append(message)
                arrived.set()

            client.on_message(6, on_blob)
            await client.notify("subscribe", [session], cid=6)
            await arrived.wait()
            return blobs, times

    blobs, times = run(go())
    message = blobs[0]
    assert message[:5] == [1, 2, 3, 4, 5]
    assert isinstance(message[5], str) and 4000 < len(message[5].encode()) < 6000
    assert times == []      # not subscribed to cid 5


BAD_NAMES = ["", "a.b", ".", "_internal", "_", "echo.", 5, None, b"echo"]


@pytest.mark.parametrize("name", ["login", "echo", "a", "x-y", "a_b", "日本"])
def test_valid_method_names(name):
    validate_method(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_method_names(name):
    with pytest.raises(TypeError if not isinstance(name, str) else ValueError):
        validate_method(name)


def test_invalid_calls_are_refused_before_anything_is_sent(url):
    """Had any of these reached the server, it would have answered or closed
    the connection, and the login after them would have got that answer."""
    async def go():
        async with connect(url) as client:
            for name in BAD_NAMES:
                with pytest.raises((TypeError, ValueError)):
                    await client.request(name, [ADMIN])
                with pytest.raises((TypeError, ValueError)):
                    await client.notify(name, [ADMIN], cid=5)
            with pytest.raises(TypeError):
                await client.request("echo", {"not": "a list"})
            with pytest.raises(TypeError):
                await client.notify("subscribe", [], cid="5")
            with pytest.raises(TypeError):
                await client.notify("subscribe", [], cid=True)
            with pytest.raises(ValueError):
                client.on_message(0, print)
            session = await login(client)
            params = [session, PAYLOAD]
            assert await client.request("echo", params) == params
            return client.closed

    assert run(go()) is False


def test_a_close_fails_pending_requests(start_server, tmp_path):
    apps = tmp_path / "apps"
    (apps / "silent").mkdir(parents=True)
    (apps / "silent" / "silent.lua").write_text(SILENT_LUA)
    server = start_server({"silent": {"standalone": False, "auto_start": True, "instances": 1,
                                      "protocol": "LAppS", "request_target": "/silent"}},
                          applications=apps)

    async def go():
        async with connect(server.url("/silent")) as client:
            # Tasks start in creation order, and sends are serialised, so the
            # three requests go out before the CN that makes the service close.
            pending = [asyncio.ensure_future(client.request("hang", [i])) for i in range(3)]
            await asyncio.ensure_future(client.notify("close", [], cid=1))
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            with pytest.raises(ConnectionClosedError) as after:
                await client.request("hang")
            return outcomes, after.value

    outcomes, after = run(go())
    assert [type(o) for o in outcomes] == [ConnectionClosedError] * 3
    for error in outcomes:
        assert error.code == 4000 and error.reason == "asked to close"
        assert "before the response to 'hang'" in str(error)
    assert after.code == 4000 and "cannot send 'hang'" in str(after)


# -- channel history and reconnection ----------------------------------------

HISTORY = {"lhistory": reactive("/lhistory", protocol="LAppS"),
           "hticker": standalone(preload=["nap"])}


async def until(predicate, timeout=20):
    """Wait until ``predicate()`` holds, looking every 5 ms."""
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


def test_echo_lapps_subscribe_request_recovers_the_time(url):
    """The subscribe request of echo_lapps, the recovery pattern: plain
    without a position, with one from the time pushes (cid 5) on a second
    connection every push after it again, and refusals for the rest."""
    async def go():
        async with connect(url) as client:
            session = await login(client)
            with pytest.raises(LAppSError) as unknown:
                await client.request("subscribe", [session, {"cid": 9}])
            plain = await client.request("subscribe",
                                         [session, {"cid": 6, "epoch": "e", "offset": 1}])
            first = await client.request("subscribe", [session, {"cid": 5}])
            pushed = asyncio.Queue()
            client.on_message(5, lambda message: pushed.put_nowait(client.position(5)))
            position = await pushed.get()
            await pushed.get()
        async with connect(url) as again:
            session = await login(again)
            replayed = []
            again.on_message(5, lambda message: replayed.append(again.position(5)))
            epoch, offset = position
            recovered = await again.request("subscribe", [session, {"cid": 5, "epoch": epoch,
                                                                    "offset": offset - 1}])
            other = await again.request("subscribe", [session, {"cid": 5, "epoch": "other",
                                                                "offset": offset}])
            with pytest.raises(LAppSError) as anonymous:
                await again.request("subscribe", [{"authkey": "guess"}, {"cid": 5}])
        return unknown.value, plain, first, position, recovered, replayed, other, anonymous.value

    unknown, plain, first, position, recovered, replayed, other, anonymous = run(go())
    assert unknown.code == -32602
    assert plain == first == [{"recovered": False, "epoch": "", "offset": 0}]
    epoch, offset = position
    assert isinstance(epoch, str) and epoch and offset >= 1
    [state] = recovered
    assert state["recovered"] is True and state["epoch"] == epoch and state["offset"] > offset
    assert replayed[:2] == [(epoch, offset), (epoch, offset + 1)]
    assert other == [{"recovered": False, "epoch": epoch, "offset": other[0]["offset"]}]
    assert anonymous.code == -32000


def test_a_reconnecting_client_resubscribes_from_its_position(start_server):
    """Cut from the outside while hticker goes on sending on channel 61
    (cid 8), the client tries again until the proxy lets it through;
    on_connect resubscribes from position(8), and the offsets go on with
    none missed and none twice. A request pending at the cut, and one made
    while the connection is down, fail with ConnectionClosedError."""
    server = start_server(HISTORY, applications=TEST_APPS)
    server.wait_started(HISTORY)

    async def go():
        proxy = await Proxy(server.host, server.port).start()
        seen, answers = [], []

        async def on_connect(client):
            position = client.position(8)
            if position is None:
                client.on_message(8, lambda message: seen.append(client.position(8)))
                answers.append(await client.request("subscribe", [61]))
            else:
                epoch, offset = position
                answers.append(await client.request(
                    "subscribe", [61, {"epoch": epoch, "offset": offset}]))

        client = await connect(proxy.url("/lhistory"), reconnect=True, on_connect=on_connect,
                               backoff_initial_delay=0.02)
        try:
            await until(lambda: len(seen) >= 20)
            pending = asyncio.ensure_future(client.request("presence", [61]))
            proxy.cut(hold=True)
            errors = await asyncio.gather(pending, return_exceptions=True)
            at_cut = client.position(8)
            try:
                await client.request("presence", [61])
            except ConnectionClosedError as error:
                errors.append(error)
            # Held until it has tried again and hticker has sent 100 more.
            await until(lambda: proxy.refused >= 2)
            hundred_more = (at_cut[1] // 100 + 2) * 100
            await asyncio.to_thread(server.wait_for, rf"hticker::offset {hundred_more}\b")
            proxy.restore()
            await client.wait_connected()
            top = answers[-1][1]["offset"]
            await until(lambda: seen[-1][1] >= top + 50)
            return at_cut, errors, answers, seen, client.reconnects, proxy.relayed
        finally:
            await client.close()
            await proxy.close()

    at_cut, errors, answers, seen, reconnects, relayed = run(go())
    assert [type(e) for e in errors] == [ConnectionClosedError] * 2, errors
    assert errors[0].code == errors[1].code == 1006
    assert reconnects == 1 and relayed == 2
    epoch, k = at_cut
    assert answers[0] == [True]
    [ok, recovery] = answers[1]
    assert ok is True and recovery["recovered"] is True and recovery["epoch"] == epoch
    assert recovery["offset"] >= k + 100
    offsets = [offset for _, offset in seen]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
    assert {e for e, _ in seen} == {epoch}


def test_without_reconnect_a_cut_closes_the_client(server):
    async def go():
        proxy = await Proxy(server.host, server.port).start()
        try:
            client = await connect(proxy.url("/echo_lapps"))
            await login(client)
            proxy.cut()
            await client.wait_closed()
            with pytest.raises(ConnectionClosedError) as refused:
                await client.request("login", [ADMIN])
            with pytest.raises(ConnectionClosedError) as waited:
                await client.wait_connected()
            return client, refused.value, waited.value, proxy.relayed
        finally:
            await proxy.close()

    client, refused, waited, relayed = run(go())
    assert client.closed and client.close_code == 1006 and client.reconnects == 0
    assert refused.code == waited.code == 1006
    assert relayed == 1


def test_a_failing_on_connect_stops_the_client(server):
    """Raised on the first connection, connect() raises it; on a
    reconnection, the client closes instead of trying again."""
    async def go():
        proxy = await Proxy(server.host, server.port).start()
        calls = []

        async def on_connect(client):
            calls.append(client.reconnects)
            await login(client)
            if len(calls) > 1:
                await client.request("nosuchmethod")

        try:
            with pytest.raises(LAppSError) as first:
                await connect(proxy.url("/echo_lapps"), on_connect=lambda client: client.request(
                    "nosuchmethod"))
            client = await connect(proxy.url("/echo_lapps"), reconnect=True, on_connect=on_connect)
            proxy.cut()
            await client.wait_closed()
            with pytest.raises(LAppSError) as later:
                await client.wait_connected()
            return first.value, later.value, calls, client
        finally:
            await proxy.close()

    first, later, calls, client = run(go())
    assert first.code == later.code == -32601
    assert calls == [0, 1] and client.closed
