"""The LAppS protocol on the server (spec §4): classification into the four
message types, error replies for bad input, outbound validation, and an
instance that keeps serving whatever a client sends."""

import asyncio

import cbor2
import pytest
import websockets

from conftest import TEST_APPS, reactive


@pytest.fixture
def server(start_server):
    return start_server({"lprobe": reactive("/lprobe", protocol="LAppS", instances=2,
                                            preload=["nap", "time"])},
                        applications=TEST_APPS)


def run(coro):
    return asyncio.run(coro)


async def exchange(url, *frames, replies=None):
    """Send each frame, then read ``replies`` (default: one per frame) decoded."""
    async with websockets.connect(url) as ws:
        for frame in frames:
            await ws.send(frame)
        return [cbor2.loads(await ws.recv()) for _ in range(len(frames) if replies is None else replies)]


def msg(**fields):
    return cbor2.dumps(fields)


def ok(*values):
    return {"cid": 0, "status": 1, "result": list(values)}


@pytest.mark.parametrize("message, expected", [
    (msg(lapps=1, method="classify"), ok(3, "classify", "none")),
    (msg(lapps=1, method="classify", params=[]), ok(3, "classify", [])),
    (msg(lapps=1, method="classify", params="x"), ok(3, "classify", "x")),
    (msg(lapps=1, method="classify", params=[1, "two", 3.5, None, {"k": [True]}]),
     ok(4, "classify", [1, "two", 3.5, None, {"k": [True]}])),
    (msg(lapps=1.0, method="classify", params=[{}]), ok(4, "classify", [{}])),
    (msg(lapps=1, method="classify", cid=3), ok(1, "classify", "none")),
    (msg(lapps=1, method="classify", cid=3.5, params=[7]), ok(2, "classify", [7])),
    (msg(lapps=1, method="classify", params=[1], extra="kept"), ok(4, "classify", [1])),
], ids=["request", "empty-params", "non-array-params", "request-with-params", "float-lapps",
        "cn", "cn-with-params", "extra-members"])
def test_each_message_type_reaches_lua_classified(server, message, expected):
    assert run(exchange(server.url("/lprobe"), message)) == [expected]


def invalid(data):
    return {"cid": 0, "status": 0, "error": {"code": -32600, "message": "Invalid request", "data": data}}


METHOD_RULE = "method must be a non-empty string without '.' not starting with '_'"


@pytest.mark.parametrize("message, data", [
    (cbor2.dumps([1, 2]), "a message must be a CBOR map"),
    (msg(method="x"), "lapps must be the number 1"),
    (msg(lapps=None, method="x"), "lapps must be the number 1"),
    (msg(lapps="1", method="x"), "lapps must be the number 1"),
    (msg(lapps=2, method="x"), "lapps must be the number 1"),
    (msg(lapps=True, method="x"), "lapps must be the number 1"),
    (msg(lapps=1), METHOD_RULE),
    (msg(lapps=1, method=""), METHOD_RULE),
    (msg(lapps=1, method="_internal"), METHOD_RULE),
    (msg(lapps=1, method="a.b"), METHOD_RULE),
    (msg(lapps=1, method=5), METHOD_RULE),
    (msg(lapps=1, method="x", cid="5"), "cid must be a number"),
    (msg(lapps=1, method="x", cid=None), "cid must be a number"),
])
def test_invalid_structures_get_32600_and_the_instance_goes_on(server, message, data):
    replies = run(exchange(server.url("/lprobe"), message, msg(lapps=1, method="classify")))
    assert replies == [invalid(data), ok(3, "classify", "none")]


@pytest.mark.parametrize("payload", [b"\xff", b"\x82\x01", cbor2.dumps({"lapps": 1}) + b"\x00", b""])
def test_undecodable_cbor_gets_32700_on_cid_0(server, payload):
    replies = run(exchange(server.url("/lprobe"), payload, msg(lapps=1, method="classify")))
    assert replies[0]["cid"] == 0 and replies[0]["status"] == 0
    assert replies[0]["error"]["code"] == -32700 and replies[0]["error"]["message"] == "Parse error"
    assert replies[1] == ok(3, "classify", "none")


def with_params(item: bytes) -> bytes:
    """A classify request whose params are the raw CBOR ``item``."""
    return b"\xa3" + b"".join(map(cbor2.dumps, ["lapps", 1, "method", "classify", "params"])) + item


def nested_list(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def error(code, data):
    return {"cid": 0, "status": 0, "error": {
        "code": code, "message": {-32700: "Parse error", -32600: "Invalid request"}[code],
        "data": data}}


async def exchange_settled(server, *frames, replies=None):
    """As :func:`exchange`, then wait until the server has logged the
    client's close: everything the frames made it log is logged by then."""
    async with websockets.connect(server.url("/lprobe"), max_size=None) as ws:
        port = ws.transport.get_extra_info("sockname")[1]
        for frame in frames:
            await ws.send(frame)
        answers = [cbor2.loads(await ws.recv())
                   for _ in range(len(frames) if replies is None else replies)]
    server.wait_for(rf":{port} on /lprobe \(handler \d+\) closed: code 1000")
    return answers


@pytest.mark.parametrize("payload, reply", [
    (msg(lapps=1, method="classify", params=[10 ** 5000]),
     error(-32700, "CBOR tags are not accepted (tag 2)")),
    (msg(lapps=1, method="classify", params=[-10 ** 4093]),
     error(-32700, "CBOR tags are not accepted (tag 3)")),
    (with_params(b"\x81\xc1\x01"), error(-32700, "CBOR tags are not accepted (tag 1)")),
    (with_params(b"\xd8\x1c\x81\xd8\x1d\x00"),
     error(-32700, "CBOR tags are not accepted (tag 28)")),
    (with_params(b"\xdb" + b"\xff" * 8 + b"\x01"),
     error(-32700, f"CBOR tags are not accepted (tag {2 ** 64 - 1})")),
    (b"\x81" * 100_000 + b"\x01",
     error(-32700, "not CBOR: maximum container nesting depth (400) exceeded")),
    (with_params(b"\x5b" + b"\xff" * 8), error(
        -32700, "not CBOR: premature end of stream (expected to read at least 65536 bytes, "
                "got 0 instead)")),
    (with_params(b"\x81\x62\xff\xfe"), error(-32700, "not CBOR: error decoding text string")),
    (with_params(b"\x81\xa1\x01\x02"), error(-32600, "object keys must be strings, got int")),
    (with_params(b"\x81\xf7"), error(-32600, "cannot convert UndefinedType to JSON")),
    (msg(lapps=1, method="classify", params=[float("nan"), float("inf"), 2 ** 64 - 1]),
     ok(4, "classify", [None, None, float(2 ** 64 - 1)])),
    (with_params(b"\x81" * 398 + b"\x01"), ok(4, "classify", nested_list(398))),
], ids=["bignum-5000-digits", "negative-bignum-4094-digits", "date", "shared-reference",
        "tag-2^64-1", "nested-100000-deep", "declared-2^64-bytes", "invalid-utf-8",
        "integer-map-key", "undefined", "non-finite-and-u64", "nested-399-deep"])
def test_hostile_cbor_gets_its_answer_and_the_log_stays_clean(server, payload, reply):
    """Whatever the bytes, one reply that quotes nothing of them, and the
    connection still serves the next request."""
    replies = run(exchange_settled(server, payload, msg(lapps=1, method="classify")))
    assert replies == [reply, ok(3, "classify", "none")]
    assert server.bad_lines() == []


def test_200_bignums_get_200_replies_and_no_traceback(server):
    bignum = msg(lapps=1, method="classify", params=[10 ** 5000])
    replies = run(exchange_settled(server, *[bignum] * 200, msg(lapps=1, method="classify")))
    assert replies == [error(-32700, "CBOR tags are not accepted (tag 2)")] * 200 \
        + [ok(3, "classify", "none")]
    assert server.bad_lines() == []


def test_lua_values_that_cannot_be_sent_are_refused_in_one_line(server):
    """ws:send of a table holding itself or of bytes that are not UTF-8
    returns false and the reason; nljson.from_cbor of a tag raises."""
    invalid_message = "An attempt to send an invalid LAppS-protocol message: "
    replies = run(exchange_settled(server, msg(lapps=1, method="unsendable")))
    assert replies == [ok(
        ["false", invalid_message + "nljson: a table nested more than 1000 levels deep "
                                    "(or holding itself) cannot be converted"],
        ["false", invalid_message + "string is not valid UTF-8"],
        ["false", invalid_message + "string is not valid UTF-8"],
        ["false", "nljson.from_cbor: CBOR tags are not accepted (tag 2)"])]
    assert server.bad_lines() == []


def test_a_text_frame_closes_1003_and_others_are_served(server):
    async def go():
        async with websockets.connect(server.url("/lprobe")) as bystander:
            ws = await websockets.connect(server.url("/lprobe"))
            await ws.send("not cbor")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            await bystander.send(msg(lapps=1, method="classify"))
            answers = [cbor2.loads(await bystander.recv())]
        for _ in range(2):  # round-robin: one of these is on the instance that closed
            answers += await exchange(server.url("/lprobe"), msg(lapps=1, method="classify"))
        return ws.close_code, answers

    assert run(go()) == (1003, [ok(3, "classify", "none")] * 3)


def test_integral_numbers_go_out_as_cbor_integers(server):
    async def go():
        async with websockets.connect(server.url("/lprobe")) as ws:
            await ws.send(msg(lapps=1, method="classify", params=[2, 2.5, -7, 1e15]))
            return await ws.recv()

    raw = run(go())
    assert cbor2.loads(raw)["result"][2] == [2, 2.5, -7, 10 ** 15]
    assert cbor2.dumps([2, 2.5, -7, 10 ** 15]) in raw


def test_outbound_validation_rejects_what_the_spec_forbids(server):
    replies = run(exchange(server.url("/lprobe"), msg(lapps=1, method="bad")))
    assert replies == [ok("false", "An attempt to send an invalid LAppS-protocol message: "
                                   "result must be an array")]


def test_oon_without_status_and_errors_are_sent(server):
    replies = run(exchange(server.url("/lprobe"), msg(lapps=1, method="oon"),
                           msg(lapps=1, method="error"), replies=3))
    assert replies == [{"cid": 9, "message": ["pushed"]}, ok("after"),
                       {"cid": 0, "status": 0, "error": {"code": 42, "message": "as asked"}}]


def test_replies_stay_in_request_order_while_an_instance_sleeps(server):
    """An error reply for bad input waits behind the response to the request
    before it, which is still sleeping."""
    replies = run(exchange(server.url("/lprobe"), msg(lapps=1, method="sleep", params=[0.3]),
                           b"\xff", msg(lapps=1, method="classify")))
    assert replies[0]["result"][0] == "slept" and replies[0]["result"][1] >= 290
    assert replies[1]["error"]["code"] == -32700
    assert replies[2] == ok(3, "classify", "none")
