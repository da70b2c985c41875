"""The nljson module (spec section 6.1), in-process against a real LuaJIT runtime."""

import math

import cbor2
import pytest

from lapps.lua import nljson
from lapps.lua.nljson import NlJsonError
from lapps.lua.runtime import new_runtime


@pytest.fixture
def installed():
    rt = new_runtime(64 * 1024 * 1024, "")
    return rt, nljson.install(rt)


@pytest.fixture
def runtime(installed):
    return installed[0]


@pytest.fixture
def nj(installed):
    return installed[1]


@pytest.fixture
def lua(runtime):
    """Run a Lua chunk (str) with arguments; return what it returns."""
    def run(code, *args):
        return runtime.execute(code.encode(), *args)
    return run


def ok_and_error(lua, code, *args):
    """pcall a chunk's function body; return (ok, message as str)."""
    ok, message = lua(f"return pcall(function(...) {code} end, ...)", *args)
    return ok, (message.decode() if isinstance(message, bytes) else message)


# ------------------------------------------------------------------ reading

def test_global_and_require(lua):
    assert lua("return type(nljson), require('nljson') == nljson") == (b"table", True)


def test_values_are_userdata_and_read_members(lua):
    assert lua("""
        local m = nljson.decode('{"lapps":1,"method":"echo","params":[{"authkey":"abc"},[1,2,3]],"n":null,"f":1.5,"t":true}')
        return type(m), m.lapps, m["method"], type(m.params), m.params[1].authkey,
               m.params[2][3], m.n, m.f, m.t
    """) == (b"userdata", 1, b"echo", b"userdata", b"abc", 3, None, 1.5, True)


def test_arrays_are_one_based(lua):
    assert lua("""
        local a = nljson.decode('["first","second"]')
        return a[1], a[2], a[0], #a
    """) == (b"first", b"second", None, 2)


def test_missing_keys_and_out_of_range_indices_read_nil(lua):
    assert lua("""
        local o = nljson.decode('{"a":[1,2]}')
        local s = nljson.decode('"text"')
        return o.missing, o.a[3], o.a[-1], o.a[1.5], o.a.x, o[1], s.len, s[1]
    """) == (None,) * 8


def test_nested_containers_alias_the_parent(lua):
    assert lua("""
        local o = nljson.decode('{"a":{"b":[1,2]},"list":[[0]]}')
        local a = o.a
        a.c = "new"
        a.b[1] = 10
        local inner = o.list[1]
        inner[2] = "grown"
        return nljson.encode(o)
    """) == b'{"a":{"b":[10,2],"c":"new"},"list":[[0,"grown"]]}'


def test_len(lua):
    assert lua("""
        return #nljson.decode('[1,null,3]'), #nljson.decode('{"a":1,"b":2}'),
               #nljson.decode('[]'), #nljson.decode('null'), #nljson.decode('"abc"')
    """) == (3, 2, 0, 0, 1)


# ------------------------------------------------------------------ writing

def test_assign_scalars_and_nil(lua):
    assert lua("""
        local o = nljson.decode('{"gone":1}')
        o.s = "x"; o.n = 3; o.f = -0.25; o.t = true; o.no = false; o.gone = nil
        return nljson.encode(o), o.gone, nljson.typename(o) 
    """) == (b'{"f":-0.25,"gone":null,"n":3,"no":false,"s":"x","t":true}', None, b"object")


def test_assign_lua_tables(lua):
    assert lua("""
        local o = nljson.decode('{}')
        o.arr = {1, "two", {x = 1}}
        o.empty = {}
        o.obj = {k = "v", inner = {list = {true}}}
        o.holes = {[1] = "a", [3] = "c"}
        o.mixed = {1, 2, name = "m"}
        o.numkeys = {[0] = "zero", [2.5] = "frac", [true] = "skipped"}
        o.funcs = {f = print, c = coroutine.create(print), u = newproxy()}
        return nljson.encode(o)
    """) == (b'{"arr":[1,"two",{"x":1}],"empty":[],"funcs":{"c":null,"f":null,"u":null},'
             b'"holes":["a",null,"c"],"mixed":{"1":1,"2":2,"name":"m"},'
             b'"numkeys":{"0":"zero","2.5":"frac"},"obj":{"inner":{"list":[true]},"k":"v"}}')


def test_functions_and_threads_become_null(lua):
    assert lua("""
        local a = nljson.decode('[0]')
        a[1] = print
        a[2] = coroutine.create(print)
        return nljson.encode(a)
    """) == b"[null,null]"


def test_assigning_an_nljson_value_copies_it(lua):
    assert lua("""
        local src = nljson.decode('{"list":[1,2]}')
        local dst = nljson.decode('{}')
        dst.copy = src
        dst.list = src.list
        src.list[1] = 99
        src.extra = true
        dst.self = dst
        return nljson.encode(src), nljson.encode(dst)
    """) == (b'{"extra":true,"list":[99,2]}',
             b'{"copy":{"list":[1,2]},"list":[1,2],"self":{"copy":{"list":[1,2]},"list":[1,2]}}')


def test_array_assignment_grows_with_nulls(lua):
    assert lua("""
        local a = nljson.decode('[1]')
        a[4] = "four"
        a[2] = 2
        return nljson.encode(a), #a, a[3]
    """) == (b'[1,2,null,"four"]', 4, None)


@pytest.mark.parametrize("code, message", [
    ("local a = nljson.decode('[1]'); a.key = 1", "integer index, got string"),
    ("local o = nljson.decode('{}'); o[1] = 1", "string key, got number"),
    ("local a = nljson.decode('[1]'); a[0] = 1", "out of range"),
    ("local a = nljson.decode('[1]'); a[1.5] = 1", "out of range"),
    ("local s = nljson.decode('\"s\"'); s.key = 1", "string value"),
    ("local n = nljson.decode('null'); n.key = 1", "null value"),
])
def test_wrong_key_kinds_raise(lua, code, message):
    ok, error = ok_and_error(lua, code)
    assert not ok
    assert message in error


# ------------------------------------------------------------------ library

def test_find(lua):
    assert lua("""
        local o = nljson.decode('{"1":"one","2.5":"frac","a":{"b":2},"n":null}')
        local a = nljson.find(o, "a")
        a.c = 3
        return nljson.find(o, 1), nljson.find(o, 2.5), nljson.find(o, "missing"), nljson.find(o, "n"),
               nljson.encode(o.a), nljson.find(nljson.decode('["x"]'), 1), nljson.find(o, true)
    """) == (b"one", b"frac", None, None, b'{"b":2,"c":3}', None, None)


def test_foreach_objects_in_key_order_arrays_one_based(lua):
    assert lua("""
        local seen = {}
        nljson.foreach(nljson.decode('{"b":1,"a":[true],"c":null}'), function(k, v)
          seen[#seen + 1] = k .. "=" .. tostring(v)
        end)
        nljson.foreach(nljson.decode('["x",null,{"y":2}]'), function(i, v)
          seen[#seen + 1] = type(i) .. i .. "=" .. tostring(v)
        end)
        local calls = 0
        nljson.foreach(nljson.decode('5'), function() calls = calls + 1 end)
        return table.concat(seen, " "), calls
    """) == (b'a=[true] b=1 c=nil number1=x number2=nil number3={"y":2}', 0)


def test_foreach_values_alias(lua):
    assert lua("""
        local o = nljson.decode('[{"n":1},{"n":2}]')
        nljson.foreach(o, function(i, v) v.n = v.n * 10 end)
        return nljson.encode(o)
    """) == b'[{"n":10},{"n":20}]'


def test_traverse_depth_first_with_real_indices(lua):
    assert lua("""
        local seen = {}
        nljson.traverse(nljson.decode('{"a":[10,[20,30]],"b":{"c":null}}'), function(k, v)
          seen[#seen + 1] = tostring(k) .. "=" .. tostring(v)
        end)
        return table.concat(seen, " ")
    """) == b'1=10 1=20 2=30 2=[20,30] a=[10,[20,30]] c=nil b={"c":null}'


def test_erase(lua):
    assert lua("""
        local o = nljson.decode('{"a":1,"b":[10,20,30]}')
        local r = {}
        r[1] = nljson.erase(o, "a")          -- true
        r[2] = nljson.erase(o, "a")          -- false: gone
        r[3] = nljson.erase(o.b, 0)          -- true: 0-based, removes 10
        r[4] = nljson.erase(o.b, 2)          -- false: only 2 left
        r[5] = nljson.erase(o.b, "x")        -- false: string key on an array
        r[6] = nljson.erase(o, 1)            -- false: number key on an object
        r[7] = nljson.erase(nljson.decode('3'), 0)
        r[8] = nljson.erase(o.b, -1)
        for i = 1, 8 do r[i] = tostring(r[i]) end
        return table.concat(r, " "), nljson.encode(o), o.b[1]
    """) == (b"true false true false false false false false", b'{"b":[20,30]}', 20)


def test_empty(lua):
    assert lua("""
        local r = {}
        for i, text in ipairs({'{}', '[]', '{"a":1}', '[0]', '""', 'null', '0', 'false'}) do
          r[i] = tostring(nljson.empty(nljson.decode(text)))
        end
        return table.concat(r, " ")
    """) == b"true true false false false false false false"


def test_typename(lua):
    assert lua("""
        local o = nljson.decode('{"o":{},"a":[],"s":"","n":1.5,"b":false,"z":null}')
        local r = {}
        for i, text in ipairs({'{}', '[]', '"s"', '-1', 'true', 'null'}) do
          r[i] = nljson.typename(nljson.decode(text))
        end
        return table.concat(r, " "), nljson.typename(o.o), nljson.typename(o.a)
    """) == (b"object array string number boolean null", b"object", b"array")


@pytest.mark.parametrize("function", ["encode", "encode_pretty", "to_cbor", "find", "foreach",
                                      "traverse", "erase", "empty", "typename"])
def test_library_functions_want_an_nljson_value(lua, function):
    for value in ("{}", "'text'", "nil", "newproxy(true)"):
        ok, error = ok_and_error(lua, f"return nljson.{function}({value}, function() end)")
        assert not ok
        assert "nljson value expected" in error


# ------------------------------------------------------------------ encoding

def test_encode_compact_sorted(lua):
    assert lua("""
        return nljson.encode(nljson.decode(' { "b" : [ 1 , 2 ] , "a" : { "z" : null , "B" : "x" } , "" : {} } '))
    """) == b'{"":{},"a":{"B":"x","z":null},"b":[1,2]}'


def test_tostring_is_compact_json(lua):
    assert lua("""
        local o = nljson.decode('{"k": [1, "v"]}')
        return tostring(o), tostring(o.k)
    """) == (b'{"k":[1,"v"]}', b'[1,"v"]')


def test_encode_escapes(lua):
    assert lua(r"""
        local a = nljson.decode('[]')
        a[1] = "q\"b\\s/\b\f\n\r\t\1\31\0\127é😀"
        return nljson.encode(a)
    """) == '["q\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\\u0000\x7fé😀"]'.encode()


def test_encode_numbers(lua):
    assert lua("""
        local a = nljson.decode('[]')
        local values = {0, -0.0, 3, -7, 2^53, -2^63, 1.5, 0.1, 1/3, 1e300, 2^63, 0/0, 1/0, -1/0}
        for i, v in ipairs(values) do a[i] = v end
        local text = nljson.encode(a)
        local back = nljson.decode(text)
        return text, back[9] == 1/3, back[8] == 0.1, back[11] == 2^63
    """) == (b'[0,0,3,-7,9007199254740992,-9223372036854775808,1.5,0.1,0.3333333333333333,'
             b'1e+300,9.223372036854776e+18,null,null,null]', True, True, True)


def test_encode_rejects_invalid_utf8(lua):
    for code in ("local a = nljson.decode('[]'); a[1] = '\\255'; return nljson.encode(a)",
                 "local o = nljson.decode('{}'); o['\\192\\128'] = 1; return tostring(o)",
                 "local a = nljson.decode('[]'); a[1] = '\\237\\160\\128'; return nljson.encode(a)"):
        ok, error = ok_and_error(lua, code)
        assert not ok
        assert "UTF-8" in error


UTF8_CASES = [
    b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", "a\u00e9b\u20ac\U0001F600c".encode(),   # valid
    b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xc2", b"\xc2\x41", b"\xe0\x80\x80", b"\xe0\x9f\xbf",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xe1\x80", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xf0\x90\x80", b"ok\xe2\x82",     # invalid
]


@pytest.mark.parametrize("data", UTF8_CASES)
def test_utf8_validation_agrees_with_python(lua, data):
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    encoded, _ = ok_and_error(lua, "local a = nljson.decode('[]'); a[1] = ...; return nljson.encode(a)", data)
    decoded, _ = ok_and_error(lua, "return nljson.decode(...)[1]", b'["' + data + b'"]')
    assert (encoded, decoded) == (valid, valid)


def test_encode_pretty(lua):
    assert lua("""
        local o = nljson.decode('{"b":[1,{"c":null}],"a":{},"e":[],"s":"x"}')
        return nljson.encode_pretty(o), nljson.encode_pretty(o, 4), nljson.encode_pretty(o, 0),
               nljson.encode_pretty(nljson.decode('[]')), nljson.encode_pretty(nljson.decode('7'))
    """) == (
        b'{\n  "a": {},\n  "b": [\n    1,\n    {\n      "c": null\n    }\n  ],\n  "e": [],\n  "s": "x"\n}',
        b'{\n    "a": {},\n    "b": [\n        1,\n        {\n            "c": null\n        }\n    ],\n'
        b'    "e": [],\n    "s": "x"\n}',
        b'{"a":{},"b":[1,{"c":null}],"e":[],"s":"x"}',
        b"[]", b"7")


# ------------------------------------------------------------------ decoding

def test_decode_strings_and_escapes(lua):
    assert lua(r"""
        local a = nljson.decode([==[ ["\u00e9\ud83d\ude00\/\"\\\b\f\n\r\t\u0000", "é", 1e2, -0.5, 1E-2] ]==])
        return a[1], a[2], a[3], a[4], a[5]
    """) == ("é😀/\"\\\b\f\n\r\t\0".encode(), "é".encode(), 100, -0.5, 0.01)


@pytest.mark.parametrize("text", [
    "", " ", "[1,]", "{'a':1}", '{"a" 1}', '{"a":1,}', "01", "1.", ".5", "+1", "-", "1e", "[1] x",
    "NaN", "Infinity", "[1e400]", "tru", "nul", '"open', '"\\ud800"', '"\\udc00"', '"\\x"',
    '"\\u12"', '"tab\there"', '"\xff"', '"\xc0\x80"', "[", "{", '{"a":[}',
])
def test_decode_errors_are_lua_errors(lua, text):
    ok, error = ok_and_error(lua, "return nljson.decode(...)", text.encode("latin-1"))
    assert not ok
    assert "nljson.decode" in error


def test_decode_needs_a_string(lua):
    ok, error = ok_and_error(lua, "return nljson.decode({})")
    assert not ok and "string expected" in error


def test_decode_file(lua, tmp_path):
    path = tmp_path / "conf.json"
    path.write_text('{"name": "é", "list": [1, 2]}\n', encoding="utf-8")
    assert lua("local o = nljson.decode_file(...); return o.name, o.list[2]",
               str(path).encode()) == ("é".encode(), 2)
    ok, error = ok_and_error(lua, "return nljson.decode_file(...)", str(tmp_path / "missing.json").encode())
    assert not ok and "missing.json" in error
    (tmp_path / "bad.json").write_text("{")
    ok, error = ok_and_error(lua, "return nljson.decode_file(...)", str(tmp_path / "bad.json").encode())
    assert not ok and "parse error" in error


# ------------------------------------------------------------------ CBOR

@pytest.mark.parametrize("code, expected", [
    ("""return nljson.to_cbor(nljson.decode('{"a":1}'))""", "a1616101"),
    ("""return nljson.to_cbor(nljson.decode('[1,1.5,-2,"x",null,true,false,4294967296]'))""",
     "88 01 fb3ff8000000000000 21 6178 f6 f5 f4 1b0000000100000000"),
    ("""local o = nljson.decode('{}'); o.n = 3; o.f = 2.5; o.big = 1e20; return nljson.to_cbor(o)""",
     "a3 63626967 fb4415af1d78b58c40 6166 fb4004000000000000 616e 03"),
    ("""return nljson.to_cbor(nljson.decode('"é"'))""", "62c3a9"),
    ("""return nljson.to_cbor(nljson.decode('{"e":{},"l":[]}'))""", "a2 6165 a0 616c 80"),
])
def test_to_cbor_bytes(lua, code, expected):
    assert lua(code) == bytes.fromhex(expected.replace(" ", ""))


NUMBERS = [0, -0.0, 23, 24, -24, -25, 255, 256, 65535, 65536, 4294967295, 4294967296, -4294967297,
           2 ** 53, -(2 ** 53) - 2, 2 ** 63 - 1024, -(2 ** 63), 2 ** 63, -(2 ** 64), 1e20, -1.5, 0.1,
           1 / 3, 5e-324, 2.2250738585072014e-308, -1.7976931348623157e308, float("nan"), float("inf"),
           -float("inf")]


def test_numbers_to_cbor_and_python(nj, lua):
    """Integral numbers in [-2^63, 2^63) are CBOR integers, other finite ones
    floats, non-finite ones null; every form agrees with cbor2."""
    expected = [None if not math.isfinite(x) else int(x) if x == int(x) and -(2 ** 63) <= x < 2 ** 63
                else float(x) for x in NUMBERS]
    array = lua("""
        local a = nljson.decode('[]')
        for i, x in ipairs({...}) do a[i] = x end
        return a
    """, *[float(x) for x in NUMBERS])
    back = nj.to_python(array)
    assert back == expected
    assert [type(x) for x in back] == [type(x) for x in expected]
    assert math.copysign(1, back[NUMBERS.index(-(2 ** 64))]) == -1
    assert lua("return nljson.to_cbor(...)", array) == cbor2.dumps(expected)


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536])
def test_cbor_lengths(nj, lua, length):
    value = lua("""
        local n = ...
        local t = {}
        for i = 1, n do t[i] = i % 2 == 0 end
        local o = nljson.decode('{}')
        o.s = string.rep("é", n); o.a = t
        return o
    """, length)
    expected = {"s": "é" * length, "a": [i % 2 == 0 for i in range(1, length + 1)]}
    assert nj.to_python(value) == expected
    assert lua("return nljson.to_cbor(...)", value) == cbor2.dumps(dict(sorted(expected.items())))


def test_to_cbor_rejects_invalid_utf8(lua):
    ok, error = ok_and_error(lua, "local a = nljson.decode('[]'); a[1] = '\\255'; return nljson.to_cbor(a)")
    assert not ok and "UTF-8" in error


def test_from_cbor(lua):
    data = bytes.fromhex("a3 6161 01 6162 83 f6 f5 fb3ff8000000000000 6163 42 ff00".replace(" ", ""))
    assert lua("""
        local o = nljson.from_cbor(...)
        return type(o), o.a, o.b[1], o.b[2], o.b[3], o.c, nljson.typename(o.b)
    """, data) == (b"userdata", 1, None, True, 1.5, b"\xff\x00", b"array")


def test_cbor_round_trip(lua):
    assert lua("""
        local o = nljson.decode('{"a":[1,2.5,null,{"b":"é"}],"e":{},"l":[]}')
        return nljson.encode(nljson.from_cbor(nljson.to_cbor(o)))
    """) == '{"a":[1,2.5,null,{"b":"é"}],"e":{},"l":[]}'.encode()


@pytest.mark.parametrize("hexdata", [
    "",             # nothing
    "a2616101",     # truncated map
    "0101",         # trailing data
    "a10102",       # integer map key
    "c11a514b67b0",  # tag 1 (datetime)
    "f7",           # undefined
    "7f",           # truncated indefinite string
])
def test_from_cbor_errors_are_lua_errors(lua, hexdata):
    ok, error = ok_and_error(lua, "return nljson.from_cbor(...)", bytes.fromhex(hexdata))
    assert not ok
    assert "nljson.from_cbor" in error


def test_from_cbor_refuses_tags_as_the_wire_does(lua):
    ok, error = ok_and_error(lua, "return nljson.from_cbor(...)", cbor2.dumps(10 ** 5000))
    assert not ok and error.endswith("nljson.from_cbor: CBOR tags are not accepted (tag 2)")


def test_decode_of_text_nested_past_the_lua_stack_names_it(lua):
    ok, error = ok_and_error(lua, "return nljson.decode(string.rep('[', 100000))")
    assert (ok, error) == (False, "nljson.decode: parse error: nested too deeply")


def test_a_table_holding_itself_is_a_one_line_error(lua):
    ok, error = ok_and_error(lua, """
        local t = {}; t.again = t
        local o = nljson.decode('{}'); o.t = t""")
    assert not ok
    assert error == ("nljson: a table nested more than 1000 levels deep (or holding itself) "
                     "cannot be converted")


def test_python_sees_one_line_for_a_table_holding_itself(nj, lua):
    cyclic = lua("local t = {}; t[1] = t; return t")
    with pytest.raises(NlJsonError, match=r"^nljson: a table nested more than 1000 levels deep "
                                          r"\(or holding itself\) cannot be converted$"):
        nj.to_python(cyclic)


def test_from_cbor_needs_a_string(lua):
    ok, error = ok_and_error(lua, "return nljson.from_cbor(5 > 3)")
    assert not ok and "string expected" in error


# ------------------------------------------------------------------ Python API

REQUEST = {"lapps": 1, "method": "echo", "params": [{"authkey": "abc"}, [1, 2, 3, 4, 5]]}


def test_to_lua_reaches_lua_as_message(nj, lua):
    message = nj.to_lua(REQUEST)
    assert nj.is_nljson(message)
    assert lua("""
        local m = ...
        return type(m), m.method, m.params[1].authkey, m.params[2][5], #m.params, nljson.typename(m)
    """, message) == (b"userdata", b"echo", b"abc", 5, 2, b"object")


@pytest.mark.parametrize("value", [
    REQUEST,
    {"nulls": [None, {"n": None}, [None]], "top": None},
    {"emptyobj": {}, "emptyarr": [], "nested": [{}, []]},
    {"unicode": "é😀 ünï", "ключ": ["значение"], "ctl": "\0\n\t\""},
    {"ints": [0, -1, 2 ** 53, -(2 ** 63)], "floats": [1.5, -0.25, 1e300, 0.1]},
    {"bools": [True, False]},
    [], {}, "text", 7, 2.5, True, False, None,
])
def test_round_trip(nj, value):
    back = nj.to_python(nj.to_lua(value))
    assert back == value
    assert _types(back) == _types(value)


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value)


def test_round_trip_through_lua_encoding(nj, lua):
    value = {"b": [1, None, {}], "a": [], "s": "é"}
    assert lua("return nljson.encode(...)", nj.to_lua(value)) == '{"a":[],"b":[1,null,{}],"s":"é"}'.encode()


@pytest.mark.parametrize("size", [900, 1100, 20000])
def test_to_lua_large_values(nj, lua, size):
    value = {"list": list(range(size)), "map": {str(i): [i] for i in range(size // 10)}}
    message = nj.to_lua(value)
    assert lua("local m = ...; return #m.list, m.list[#m.list], m.map['7'][1]", message) == (size, size - 1, 7)
    assert nj.to_python(message) == value


def test_to_lua_conversions(nj, lua):
    message = nj.to_lua({"bytes": b"\xff\x00", "big": 2 ** 70, "float_int": 2.0})
    assert lua("local m = ...; return m.bytes, m.big, m.float_int", message) == (
        b"\xff\x00", float(2 ** 70), 2)
    back = nj.to_python(nj.to_lua({"big": 2 ** 70}))
    assert back == {"big": float(2 ** 70)} and type(back["big"]) is float
    with pytest.raises(NlJsonError):        # the bytes are no UTF-8 string
        nj.to_python(message)


@pytest.mark.parametrize("value", [
    {1: "int key"}, {None: 1}, {"ok": {(1, 2): 3}}, {1, 2}, object(), (1, 2), ["\ud800"],
    [complex(1, 2)], 10 ** 400,
], ids=["int-key", "none-key", "tuple-key", "set", "object", "tuple", "surrogate", "complex", "huge-int"])
def test_to_lua_rejects(nj, value):
    with pytest.raises(NlJsonError):
        nj.to_lua(value)


def test_to_python_numbers(nj, lua):
    value = lua("""
        local a = nljson.decode('[]')
        a[1] = 3; a[2] = 3.0; a[3] = 1.5; a[4] = 0/0; a[5] = 1/0; a[6] = -2^63; a[7] = 1e20
        return a
    """)
    back = nj.to_python(value)
    assert back == [3, 3, 1.5, None, None, -(2 ** 63), 1e20]
    assert [type(x) for x in back] == [int, int, float, type(None), type(None), int, float]


def test_to_python_of_lua_tables(nj, lua):
    assert nj.to_python(lua("return {cid = 0, status = 1, result = {}}")) == {
        "cid": 0, "status": 1, "result": []}
    assert nj.to_python(lua("return {cid = 5, message = {'a', {x = nljson.decode('[1]')}}}")) == {
        "cid": 5, "message": ["a", {"x": [1]}]}


def test_to_python_of_lua_scalars(nj, lua):
    assert nj.to_python(lua("return 'é'")) == "é"
    assert nj.to_python(lua("return 4")) == 4
    assert nj.to_python(lua("return 4.5")) == 4.5
    assert nj.to_python(lua("return true")) is True
    assert nj.to_python(lua("return nil")) is None
    assert nj.to_python(lua("return 0/0")) is None
    assert nj.to_python(lua("return print")) is None


def test_to_python_rejects_invalid_utf8(nj, lua):
    with pytest.raises(NlJsonError):
        nj.to_python(lua("local o = nljson.decode('{}'); o.s = '\\255'; return o"))
    with pytest.raises(NlJsonError):
        nj.to_python(lua("return '\\255'"))
    with pytest.raises(NlJsonError):
        nj.to_python({"python": "dict"})


def test_is_nljson(nj, lua):
    assert nj.is_nljson(lua("return nljson.decode('null')"))
    assert nj.is_nljson(lua("return nljson.decode('[[1]]')[1]"))
    for code in ("return {}", "return 's'", "return 1", "return nil", "return newproxy(true)",
                 "return print"):
        assert not nj.is_nljson(lua(code))
    assert not nj.is_nljson({"a": 1})


def test_reply_pattern_of_lapps_services(nj, lua):
    """echo_lapps: decode a template, assign the request's params, send it."""
    reply = lua("""
        local message = ...
        local msg = nljson.decode('{"cid":0,"status":1,"result":[]}')
        msg.result = message.params
        message.params[2][1] = "changed after the copy"
        return msg
    """, nj.to_lua(REQUEST))
    assert nj.to_python(reply) == {"cid": 0, "status": 1, "result": REQUEST["params"]}


def test_runtimes_are_independent(nj, lua):
    other = new_runtime(16 * 1024 * 1024, "")
    other_nj = nljson.install(other)
    value = other_nj.to_lua({"from": "other"})
    assert not nj.is_nljson(value)
    with pytest.raises(NlJsonError):
        nj.to_python(value)
    assert other.execute(b"return nljson.encode(...)", value) == b'{"from":"other"}'


def test_short_lived_values_stay_within_a_small_heap():
    """Values are collected promptly: a churning service fits a tight max_memory."""
    small = new_runtime(6 * 1024 * 1024, "")
    nljson.install(small)
    assert small.execute(b"""
        local peak = 0
        for i = 1, 100000 do
          local m = nljson.decode('{"cid":0,"status":1,"result":[{"authkey":"abc"},[1,2,3,4,5]]}')
          local r = m.result[1]
          if i % 1000 == 0 then peak = math.max(peak, collectgarbage("count")) end
        end
        return peak < 4096
    """) is True
