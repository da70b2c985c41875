"""The browser side: lapps/static/demo.html with lapps-client.js in Debian's
Chromium (driven by playwright-core from tests/browser) against a real
echo_lapps server, directly and through a proxy that cuts the connection,
and lapps-client.js's CBOR codec against cbor2.

Needs node, /usr/bin/chromium and tests/browser/node_modules, all of which
``bash tests/browser/setup.sh`` installs; without them these tests fail."""

import asyncio
import json
import math
import re
import struct
from pathlib import Path

import cbor2
import pytest

from conftest import REPO
from lapps.client import connect
from support.node import BROWSER, SETUP, NodeScript, node
from support.proxy import ThreadedProxy

STATIC = REPO / "lapps" / "static"
CHROMIUM = Path("/usr/bin/chromium")
SERVICES = json.loads((REPO / "etc" / "echo_lapps.json").read_text())["services"]


# -- the demo page in Chromium ----------------------------------------------

def assert_browser_installed():
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: {SETUP}"
    assert (BROWSER / "node_modules" / "playwright-core").is_dir(), \
        f"playwright-core is not installed in tests/browser: {SETUP}"


def test_demo_page_in_chromium(start_server):
    assert_browser_installed()
    server = start_server(SERVICES)
    server.wait_started(SERVICES)
    code, seen, output = node("demo.mjs", server.url("/echo_lapps"),
                              "--echoes", 10, "--times", 2, "--timeout", 30000, timeout=90)
    assert code == 0 and seen["ok"], output
    assert seen["login"] == "ok"
    assert seen["connection"] == "open"
    assert seen["echoes"] >= 10
    assert seen["times"] >= 2
    assert seen["time"].startswith("Server time: ")
    assert seen["mismatches"] == 0
    assert seen["errors"] == [], seen["errors"]
    # The server logged the page's connection (whose Origin is "null").
    server.wait_for(r"connected to /echo_lapps as handler", timeout=5)


async def two_time_pushes(url):
    """Wait for two time pushes on a connection of its own: both sent after
    this was called."""
    async with connect(url) as client:
        [session] = await client.request("login", [{"user": "admin", "password": "admin"}])
        pushes = asyncio.Queue()
        client.on_message(5, pushes.put_nowait)
        await client.notify("subscribe", [session], cid=5)
        for _ in range(2):
            await asyncio.wait_for(pushes.get(), 10)


def test_demo_page_recovers_the_time_across_a_cut(start_server):
    """The page's connection, through a proxy, is cut and held down while
    the server pushes the time twice; the page reconnects by itself, logs in
    again and resubscribes from its position: the pushes it missed arrive,
    and the offsets go on with no gap and no duplicate."""
    assert_browser_installed()
    server = start_server(SERVICES)
    server.wait_started(SERVICES)
    proxy = ThreadedProxy(server.host, server.port)
    try:
        with NodeScript("demo.mjs", proxy.url("/echo_lapps"), "--echoes", 5, "--times", 2,
                        "--cut", "--timeout", 30000) as script:
            before = script.line(timeout=60)
            assert before.get("phase") == "cut", script.output()
            proxy.cut(hold=True)
            asyncio.run(two_time_pushes(server.url("/echo_lapps")))
            proxy.restore()
            code, seen, output = script.finish(timeout=60)
    finally:
        proxy.stop()
    assert code == 0 and seen["ok"], output
    assert seen["reconnects"] == 1 and seen["connection"] == "open"
    assert seen["gaps"] == 0 and seen["mismatches"] == 0
    recovered = re.fullmatch(r"(\d+) missed pushes", seen["recovered"])
    assert recovered and int(recovered.group(1)) >= 2, seen["recovered"]
    # Every push between the two readings arrived once, and the time went on
    # past those recovered.
    pushes = seen["times"] - before["times"]
    assert pushes == seen["offset"] - before["offset"] > int(recovered.group(1))
    assert seen["echoes"] > before["echoes"]
    # Chromium logs each attempt the held proxy refused; nothing else.
    assert [e for e in seen["errors"] if "WebSocket connection to" not in e] == [], seen["errors"]


def test_static_files_never_parse_html_from_data():
    """Everything the demo shows is set with textContent."""
    for name in ("demo.html", "lapps-client.js"):
        text = (STATIC / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{name} uses {sink}"
    assert '<script src="lapps-client.js"></script>' in (STATIC / "demo.html").read_text()


# -- the CBOR codec against cbor2 -------------------------------------------

TWO_53 = 2**53

#: Values cbor2 encodes for the decoder (name -> (value, canonical)). With
#: canonical=True, cbor2 writes floats in their shortest exact form (float16
#: or float32), so those decoders are exercised too.
VALUES = {
    "zero": (0, False), "one": (1, False), "int_23": (23, False), "int_24": (24, False),
    "int_255": (255, False), "int_256": (256, False), "int_65535": (65535, False),
    "int_65536": (65536, False), "int_2_32_minus_1": (2**32 - 1, False),
    "int_2_32": (2**32, False), "int_2_53_minus_1": (TWO_53 - 1, False),
    "int_2_53": (TWO_53, False), "int_2_53_plus_1": (TWO_53 + 1, False),
    "int_2_64_minus_1": (2**64 - 1, False),
    "neg_1": (-1, False), "neg_24": (-24, False), "neg_25": (-25, False),
    "neg_256": (-256, False), "neg_257": (-257, False), "neg_65537": (-65537, False),
    "neg_2_32": (-2**32, False), "neg_2_53": (-TWO_53, False),
    "neg_2_53_minus_1": (-TWO_53 - 1, False), "neg_2_64": (-2**64, False),
    "f16_zero": (0.0, True), "f16_neg_zero": (-0.0, True), "f16_one_and_half": (1.5, True),
    "f16_max": (65504.0, True), "f16_subnormal": (5.960464477539063e-08, True),
    "f16_neg_four": (-4.0, True), "f16_inf": (math.inf, True),
    "f16_neg_inf": (-math.inf, True), "f16_nan": (math.nan, True),
    "f32_100000": (100000.0, True), "f32_max": (3.4028234663852886e38, True),
    "f64_1_1": (1.1, False), "f64_1e300": (1.0e300, False), "f64_neg": (-4.1, False),
    "f64_one": (1.0, False), "f64_tiny": (5e-324, False),
    "text_empty": ("", False), "text_a": ("a", False), "text_ietf": ("IETF", False),
    "text_escapes": ("\"\\", False), "text_u_umlaut": ("\u00fc", False),
    "text_cjk": ("\u6c34", False), "text_astral": ("\U00010151", False),
    "text_mixed": ("aé€😀 ключ", False), "text_300": ("x" * 300, False),
    "text_70000": ("é" * 35000, False),
    "bytes_empty": (b"", False), "bytes_4": (b"\x01\x02\x03\x04", False),
    "bytes_256": (bytes(range(256)), False),
    "null": (None, False), "true": (True, False), "false": (False, False),
    "undefined": (cbor2.undefined, False),
    "array_empty": ([], False), "map_empty": ({}, False),
    "array_nested": ([1, [2, 3], [4, 5]], False), "array_25": (list(range(1, 26)), False),
    "map_nested": ({"a": 1, "b": [2, 3]}, False),
    "array_with_map": (["a", {"b": "c"}], False),
    "map_deep": ({"a": {"b": {"c": {"d": [None, True, False, -1.5, "ü", {}]}}}}, False),
    "map_unicode_keys": ({"ключ": 1, "😀": [2], "": 3}, False),
    "map_int_keys": ({1: 2, 3: 4}, False),
    "map_proto_key": ({"__proto__": {"polluted": True}, "x": 1}, False),
    "tag_unknown": (cbor2.CBORTag(4711, ["x", 1]), False),
    "deep_arrays": (json.loads("[" * 200 + "]" * 200), False),
    "lapps_response": ({"cid": 0, "status": 1, "result": [{"authkey": "0123abcd"}]}, False),
    "lapps_error": ({"cid": 0, "status": 0,
                     "error": {"code": -32601, "message": "No such method"}}, False),
    "lapps_oon": ({"cid": 5, "message": ["Server time: Thu Nov 26 17:00:00 2026"]}, False),
    "lapps_blob": ({"cid": 6, "message": [1, 2, 3, 4, 5, "#.*\n" * 1200]}, False),
    "lapps_lua_doubles": ({"cid": 0.0, "status": 1.0, "result": [{"authkey": 7.0}]}, False),
}

#: Hand-made items cbor2 does not write: indefinite lengths (RFC 8949
#: Appendix A) and a map whose integer-like keys a JS object reorders.
HANDMADE = {
    "indef_bytes": "5f42010243030405ff",
    "indef_bytes_empty": "5fff",
    "indef_text": "7f657374726561646d696e67ff",
    "indef_text_utf8_chunks": "7f62c3a963e282ac64f09f9880ff",
    "indef_array_empty": "9fff",
    "indef_array_nested": "9f018202039f0405ffff",
    "indef_array_in_definite": "83018202039f0405ff",
    "indef_array_first": "9f01820203820405ff",
    "indef_inner": "83019f0203ff820405",
    "indef_array_25": "9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff",
    "indef_map": "bf61610161629f0203ffff",
    "indef_map_in_array": "826161bf61626163ff",
    "indef_map_fun": "bf6346756ef563416d7421ff",
    "int_keys_as_text": "a3616201623130026132 03".replace(" ", ""),
    "non_shortest_int": "1b0000000000000001",
    "non_shortest_len": "7900026869",
}
# The integer-like text keys come back in another order from a JS object.
ORDER_FREE = {"int_keys_as_text"}

#: Malformed input the decoder must refuse.
BAD = {
    "empty": "",
    "truncated_argument": "19 01",
    "truncated_text": "62 61",
    "truncated_float64": "fb 3ff0",
    "truncated_array": "82 01",
    "map_missing_value": "a1 01",
    "reserved_info_28": "1c",
    "reserved_info_30": "7e",
    "lone_break": "ff",
    "break_as_map_value": "bf 01 ff",
    "unterminated_array": "9f 01",
    "unterminated_text": "7f 61 61",
    "text_chunk_in_bytes": "5f 41 01 61 61 ff",
    "nested_indefinite_chunk": "7f 7f ff ff",
    "indefinite_integer": "1f",
    "indefinite_tag": "df 00",
    "invalid_utf8": "62 c3 28",
    "trailing_bytes": "00 00",          # cbor2.loads ignores what follows
    "length_beyond_input": "5a ffffffff 00",
    "array_length_beyond_input": "9a ffffffff",
    "huge_length": "5b ffffffffffffffff",
    "too_deep": "81" * 600 + "00",
}


def float_bits(x):
    return "nan" if math.isnan(x) else struct.pack(">d", x).hex()


def describe(value):
    """cbor2's decoded value in the description scheme of cbor.mjs."""
    if value is None or isinstance(value, bool):
        return value
    if value is cbor2.undefined:
        return {"u": 1}
    if isinstance(value, int):
        return {"f": float_bits(float(value))} if -TWO_53 <= value <= TWO_53 else {"i": str(value)}
    if isinstance(value, float):
        return {"f": float_bits(value)}
    if isinstance(value, str):
        return {"s": value}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, (list, tuple)):    # cbor2 gives tuples inside tags
        return {"a": [describe(v) for v in value]}
    if isinstance(value, dict):
        return {"m": [[describe(k), describe(v)] for k, v in value.items()]}
    if isinstance(value, cbor2.CBORTag):
        return {"t": value.tag, "v": describe(value.value)}
    raise TypeError(type(value))


def unordered(description):
    """A description with map entries sorted, for order-free comparison."""
    if isinstance(description, dict):
        if "m" in description:
            pairs = [[unordered(k), unordered(v)] for k, v in description["m"]]
            return {"m": sorted(pairs, key=lambda p: json.dumps(p, sort_keys=True))}
        if "a" in description:
            return {"a": [unordered(v) for v in description["a"]]}
        if "t" in description:
            return {"t": description["t"], "v": unordered(description["v"])}
    return description


def as_js_sees_it(value):
    """What encoding a decoded value back gives: JS numbers have no integer
    or float kind, so integral floats within 2^53 come back as integers, and
    undefined is encoded as null."""
    if value is cbor2.undefined:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) <= TWO_53 \
            and not (value == 0.0 and math.copysign(1.0, value) < 0):
        return int(value)
    if isinstance(value, (list, tuple)):
        return type(value)(as_js_sees_it(v) for v in value)
    if isinstance(value, dict):
        return {k: as_js_sees_it(v) for k, v in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, as_js_sees_it(value.value))
    return value


def same(a, b):
    """Equality that tells 1 from 1.0 and True from 1, -0.0 from 0.0, and
    takes NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, cbor2.CBORTag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


#: What cbor.mjs's BUILT values must encode to (cbor2 decodes these hex
#: strings to the named values; they are checked against cbor2 below too).
BUILT = {
    "int_2_53": (TWO_53, "1b0020000000000000"),
    "neg_2_53": (-TWO_53, "3b001fffffffffffff"),
    "int_beyond_2_53": (float(2**55), "fb4360000000000000"),
    "negative_zero": (-0.0, "fb8000000000000000"),
    "nan": (math.nan, "fb7ff8000000000000"),
    "infinity": (math.inf, "fb7ff0000000000000"),
    "minus_infinity": (-math.inf, "fbfff0000000000000"),
    "pi": (math.pi, "fb400921fb54442d18"),
    "tenth": (0.1, "fb3fb999999999999a"),
    "undefined_in_array": ([None, None, True, False], "84f6f6f5f4"),
    "undefined_in_object": ({"b": 1}, "a1616201"),
    "map_with_int_keys": ({1: "one", -2: "minus two"},
                          "a201636f6e6521696d696e75732074776f"),
    "uint16array": (b"\x01\x00\x02\x01", "4401000201"),
    "arraybuffer": (b"\x01\x02\x03", "43010203"),
    "subarray": (b"\x01\x02\x03", "43010203"),
    "bigint_max": (2**64 - 1, "1bffffffffffffffff"),
    "bigint_min": (-2**64, "3bffffffffffffffff"),
    "bigint_small": (5, "05"),
    "tagged": (cbor2.CBORTag(4711, "x"), "d912676178"),
    "lapps_request": ({"lapps": 1, "method": "echo", "params": [{"authkey": "k"}, [1, 2, 3]]},
                      None),
    "lapps_notification": ({"lapps": 1, "method": "subscribe", "params": [{"authkey": "k"}],
                            "cid": 5}, None),
    "nested": ({"a": [{"b": [[], {}, ""]}], "ключ": "значение 😀", "n": -1.5}, None),
    "long_text": ("é" * 40000, None),
}


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    decode = {name: cbor2.dumps(value, canonical=canonical).hex()
              for name, (value, canonical) in VALUES.items()}
    decode.update(HANDMADE)
    vectors = {"decode": decode, "bad": {k: v.replace(" ", "") for k, v in BAD.items()}}
    path = tmp_path_factory.mktemp("cbor") / "vectors.json"
    path.write_text(json.dumps(vectors))
    code, out, output = node("cbor.mjs", path, timeout=60)
    assert code == 0, output
    return vectors, out


def test_float16_and_float32_vectors_are_short():
    """The canonical vectors really are float16/float32 encodings."""
    assert cbor2.dumps(1.5, canonical=True).hex() == "f93e00"
    assert cbor2.dumps(5.960464477539063e-08, canonical=True).hex() == "f90001"
    assert cbor2.dumps(100000.0, canonical=True).hex() == "fa47c35000"


def test_js_decodes_what_cbor2_encodes(codec):
    vectors, out = codec
    assert set(out["decoded"]) == set(vectors["decode"])
    for name, text in vectors["decode"].items():
        expected = describe(cbor2.loads(bytes.fromhex(text)))
        got = out["decoded"][name]["value"]
        if name in ORDER_FREE:
            expected, got = unordered(expected), unordered(got)
        assert got == expected, name


def test_decoded_maps_keep_their_order(codec):
    _, out = codec
    assert out["decoded"]["map_nested"]["value"] == describe({"a": 1, "b": [2, 3]})
    keys = [k["s"] for k, _ in out["decoded"]["lapps_response"]["value"]["m"]]
    assert keys == ["cid", "status", "result"]


def test_cbor2_decodes_what_js_encodes_back(codec):
    """Each decoded value, encoded again by JS, is what cbor2 writes for the
    same value (definite lengths, shortest integers, float64 otherwise)."""
    vectors, out = codec
    for name, text in vectors["decode"].items():
        original = cbor2.loads(bytes.fromhex(text))
        expected = as_js_sees_it(original)
        reencoded = bytes.fromhex(out["decoded"][name]["reencoded"])
        assert same(cbor2.loads(reencoded), expected), name
        if isinstance(expected, float) and not math.isfinite(expected):
            # cbor2 writes NaN and the infinities as float16; JS as float64.
            assert reencoded == b"\xfb" + struct.pack(">d", expected), name
        elif name not in ORDER_FREE:
            assert reencoded == cbor2.dumps(expected), name


def test_js_encodes_values_built_in_js(codec):
    _, out = codec
    assert set(out["encoded"]) == set(BUILT)
    for name, (value, text) in BUILT.items():
        got = bytes.fromhex(out["encoded"][name])
        assert same(cbor2.loads(got), value), name
        if text is not None:
            assert got.hex() == text, name
            assert same(cbor2.loads(bytes.fromhex(text)), value), name
        else:
            assert got == cbor2.dumps(value), name


def test_js_refuses_malformed_input(codec):
    vectors, out = codec
    assert set(out["bad"]) == set(vectors["bad"])
    accepted = [name for name, error in out["bad"].items() if error is None]
    assert accepted == []
    # None of the errors is a crash of the codec itself.
    for name, error in out["bad"].items():
        assert re.match(r"(RangeError|SyntaxError): CBOR: ", error), \
            (name, error)


def test_malformed_vectors_are_malformed_for_cbor2_too():
    for name, text in BAD.items():
        if name in ("too_deep", "trailing_bytes"):
            continue    # well-formed items the JS decoder refuses on purpose
        with pytest.raises(Exception):
            cbor2.loads(bytes.fromhex(text.replace(" ", "")))


def test_js_client_validates_method_names_before_sending(codec):
    _, out = codec
    methods = out["methods"]
    for valid in ("echo", "login", "x-y"):
        assert methods[valid].startswith("Error: LAppS: cannot send"), methods[valid]
        assert "not open" in methods[valid]
    for invalid in ("", "a.b", ".", "_internal"):
        assert methods[invalid].startswith("RangeError: LAppS: method name"), methods[invalid]
    for invalid in ("5", "null"):
        assert methods[invalid].startswith("TypeError: LAppS: method name"), methods[invalid]


def test_js_refuses_what_it_cannot_encode(codec):
    _, out = codec
    assert set(out["refused"]) == {"function", "symbol", "bigint_too_big", "bigint_too_small"}
    assert all(error is not None for error in out["refused"].values()), out["refused"]
