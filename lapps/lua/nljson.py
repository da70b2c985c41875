"""The ``nljson`` module: JSON values as Lua userdata (spec section 6.1).

The Lua side (``nljson.lua``) owns the representation and does all JSON text
work itself (no GIL, no Python call); this module installs it into a runtime
and converts between its values and Python values on the per-message path of
the LAppS protocol, one crossing each way:

* Python -> Lua: the value is flattened into one list (scalars, a marker and
  a count per container), passed as call arguments (one table_from for big
  values) and rebuilt by a Lua loop.
* Lua -> Python: Lua writes CBOR (strings are copied, never scanned) and
  ``cbor2.loads`` reads it, checking UTF-8 in C.

Measured for ``{"lapps":1,"method":"echo","params":[{"authkey":"abc"},[1,2,3,4,5]]}``
on the development machine: ~3 us each way. Command::

    python3 -c 'import timeit; from lapps.lua.runtime import new_runtime; \
    from lapps.lua import nljson; rt = new_runtime(64 << 20, ""); nj = nljson.install(rt); \
    m = {"lapps": 1, "method": "echo", "params": [{"authkey": "abc"}, [1, 2, 3, 4, 5]]}; \
    u = nj.to_lua(m); f = lambda fn: min(timeit.repeat(fn, number=100000, repeat=5)) * 10; \
    print(f(lambda: nj.to_lua(m)), f(lambda: nj.to_python(u)))'
"""

import math

import cbor2
from lupa.luajit21 import LuaError

from lapps.lua import source
from lapps.protocols import messages

_SOURCE = source.read("nljson.lua")

_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 63
_MAX_ARGS = 1000  # flat values up to this size go to Lua as call arguments

_loads = cbor2.loads


def _reason(error):
    """A CBOR decoding error of nljson.lua's output: only bad UTF-8 is possible."""
    if isinstance(error.__cause__, UnicodeDecodeError):
        return "string is not valid UTF-8"
    return str(error)


def _lua_reason(error):
    """A Lua error's message without the traceback lupa appends."""
    return str(error).partition("\nstack traceback:")[0]


class NlJsonError(ValueError):
    """A value cannot be converted between Python and nljson."""


def _number(x):
    """An int Lua can hold (lupa raises on ints beyond 64 bits)."""
    if _INT_MIN <= x < _INT_MAX:
        return x
    try:
        return float(x)
    except OverflowError:  # not its digits: they may be thousands (and str() refuses)
        raise NlJsonError(f"integer of {x.bit_length()} bits is too large for a JSON number") \
            from None


def _flatten(value, append, obj, arr, null, type=type, str=str, int=int, float=float,
             bool=bool, bytes=bytes, dict=dict, list=list, lo=_INT_MIN, hi=_INT_MAX):
    """Append ``value`` to a flat list: scalars as Lua takes them, None as
    ``null``, a dict as ``obj``, its size, then key, value pairs, a list as
    ``arr``, its size, then its items. Keeps the common cases inline."""
    t = type(value)
    if t is dict:
        for key in value:
            if type(key) is not str:
                raise NlJsonError(f"object keys must be strings, got {type(key).__name__}")
        append(obj)
        append(len(value))
        items = [part for pair in value.items() for part in pair]
    elif t is list:
        append(arr)
        append(len(value))
        items = value
    else:
        _flatten_scalar(value, append, obj, arr, null)
        return
    for item in items:
        ti = type(item)
        if ti is str:
            append(item.encode())
        elif ti is int and lo <= item < hi or ti is float or ti is bool or ti is bytes:
            append(item)
        elif item is None:
            append(null)
        else:
            _flatten(item, append, obj, arr, null)


def _flatten_scalar(value, append, obj, arr, null):
    """The rare cases: top-level scalars and subclasses of the accepted types."""
    t = type(value)
    if t is str:
        append(value.encode())
    elif t is int:
        append(_number(value))
    elif t is float or t is bool or t is bytes:
        append(value)
    elif value is None:
        append(null)
    elif isinstance(value, dict):           # subclasses of the accepted types
        _flatten(dict(value), append, obj, arr, null)
    elif isinstance(value, list):
        _flatten(list(value), append, obj, arr, null)
    elif isinstance(value, str):
        append(str.encode(value))
    elif isinstance(value, int):
        append(_number(int(value)))
    elif isinstance(value, float):
        append(float(value))
    elif isinstance(value, bytes):
        append(bytes(value))
    else:
        raise NlJsonError(f"cannot convert {type(value).__name__} to JSON")


class NlJson:
    """The ``nljson`` global of one runtime and the Python conversions for it."""

    def __init__(self, runtime):
        self._runtime = runtime
        self._table_from = runtime.table_from
        module, internals = runtime.execute(_SOURCE, self._py_to_cbor, self._py_from_cbor,
                                            name="@nljson.lua")
        runtime.globals()[b"nljson"] = module
        self.module = module
        self._to_cbor = internals[b"to_cbor"]
        self._from_flat = internals[b"from_flat"]
        self._from_args = internals[b"from_args"]
        self._is_nljson = internals[b"is_nljson"]
        self._null = internals[b"NULL"]
        self._obj = internals[b"OBJ_MARK"]
        self._arr = internals[b"ARR_MARK"]
        self._lua_object_types = type(module).__mro__[1]  # lupa's _LuaObject

    # ---------------------------------------------------------------- Python -> Lua

    def _flat(self, value):
        out = []
        try:
            _flatten(value, out.append, self._obj, self._arr, self._null)
        except UnicodeEncodeError as e:
            raise NlJsonError(f"string is not encodable as UTF-8: {e.reason}") from None
        except RecursionError:
            raise NlJsonError("value is nested too deeply") from None
        return out

    def to_lua(self, value, fits=None):
        """The nljson value (a Lua userdata) holding a copy of ``value``: dicts
        with str keys, lists, str, bytes (a Lua string), int, float, bool, None.
        ``fits(n)``, if given, is asked first whether a value of ``n`` scalars
        and containers fits in the runtime; if not, :class:`NlJsonError`."""
        flat = self._flat(value)
        if fits is not None and not fits(len(flat)):
            raise NlJsonError("value too big for the runtime's memory")
        if len(flat) <= _MAX_ARGS:          # arguments are cheaper than table_from
            return self._from_args(*flat)
        return self._from_flat(self._table_from(flat))

    # ---------------------------------------------------------------- Lua -> Python

    def to_python(self, value):
        """The Python value of an nljson value, a Lua table (converted as by
        assignment) or a Lua scalar. Integral numbers come out as int, others
        as float, non-finite ones as None; strings must be valid UTF-8."""
        if isinstance(value, self._lua_object_types):
            try:
                return _loads(self._to_cbor(value))
            except LuaError as e:           # e.g. a value of another runtime
                raise NlJsonError(_lua_reason(e)) from None
            except cbor2.CBORDecodeError as e:
                raise NlJsonError(_reason(e)) from None
        if value is None or value is True or value is False:
            return value
        t = type(value)
        if t is bytes:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise NlJsonError("string is not valid UTF-8") from None
        if t is int or t is str:
            return value
        if t is float:
            if not math.isfinite(value):
                return None
            return int(value) if value.is_integer() and _INT_MIN <= value < _INT_MAX else value
        raise NlJsonError(f"not a Lua value: {type(value).__name__}")

    def to_python_sized(self, value):
        """``(to_python(value), n)`` for an nljson value or a Lua table, ``n``
        being the length of its CBOR form: a measure of what rebuilding the
        value in another runtime will take (``mqr`` checks it fits)."""
        try:
            data = self._to_cbor(value)
        except LuaError as e:
            raise NlJsonError(_lua_reason(e)) from None
        try:
            return _loads(data), len(data)
        except cbor2.CBORDecodeError as e:
            raise NlJsonError(_reason(e)) from None

    def is_nljson(self, value):
        """Whether ``value`` (as lupa returned it from Lua) is an nljson value."""
        if not isinstance(value, self._lua_object_types):
            return False
        try:
            return self._is_nljson(value)
        except LuaError:                    # a value of another runtime
            return False

    # ---------------------------------------------------------------- CBOR, called from Lua

    def _py_to_cbor(self, data):
        # The CBOR nljson.lua writes is already in cbor2's form; reading it
        # back checks the strings' UTF-8, as nlohmann checks on output.
        try:
            return cbor2.dumps(_loads(data))
        except cbor2.CBORDecodeError as e:
            return None, _reason(e).encode()
        except Exception as e:  # reported to Lua as an error, never raised through it
            return None, messages.shortened(f"{type(e).__name__}: {e}").encode()

    def _py_from_cbor(self, data):
        # Decoded as the LAppS protocol decodes client messages: no tags.
        try:
            return self._table_from(self._flat(messages.decode(data)))
        except (messages.InvalidInput, NlJsonError) as e:  # short reasons already
            return None, str(e).encode()
        except Exception as e:  # reported to Lua as an error, never raised through it
            return None, messages.shortened(f"{type(e).__name__}: {e}").encode()


def install(runtime):
    """Create the global ``nljson`` in a lupa runtime made by
    :func:`lapps.lua.runtime.new_runtime`; return its :class:`NlJson`."""
    return NlJson(runtime)
