"""Create the isolated LuaJIT runtime each service instance owns.

The Lua standard library is there (services are the operator's code, like
nginx config), the Python bridge is not: no ``python`` global, no eval or
builtins, and the few Python callables the lapps modules need are captured
as upvalues of Lua wrappers and refuse every attribute lookup.

lapps's own Lua (the dispatcher, the modules, nljson) is set up with the
whole library; :func:`load_module` then seals the runtime before the
service's first line runs (see ``sandbox.lua``): no way out of Lua into C, where
every Python object is, and no bytecode, which LuaJIT does not verify.
"""

import time

from lupa import luajit21

from lapps.lua import source


class LuaStartError(Exception):
    """A service module could not be loaded into a runtime."""


def _no_attributes(obj, name, is_setting):
    raise AttributeError("Python objects are opaque to Lua")


_unbuffered_stdout = []

#: Every runtime's first chunk: no ``python`` global, a ``print`` that writes
#: each line at once, and ``lua_path`` searched first.
_PRELUDE = source.read("prelude.lua")


def new_runtime(max_memory: int, lua_path: str):
    """A fresh LuaJIT 2.1 state with ``lua_path`` searched before the default."""
    runtime = luajit21.LuaRuntime(
        register_eval=False, register_builtins=False, unpack_returned_tuples=True,
        encoding=None, attribute_filter=_no_attributes, max_memory=max_memory)
    runtime.execute(_PRELUDE, lua_path.encode())
    if not _unbuffered_stdout:  # C stdio is shared by every state: set it once
        runtime.execute(b'io.stdout:setvbuf("no")')
        _unbuffered_stdout.append(True)
    return runtime


#: The error handler every protected call uses: the message and a traceback.
_REPORT = source.read("report.lua")

#: What the service's own code may not have. Each is a way to memory that
#: Lua does not check, hence to the Python objects there: the FFI; the raw
#: pointers of ``string.buffer``; ``jit.util`` (VM internals); C modules and
#: ``package.loadlib``; bytecode (LuaJIT trusts it); and in ``debug``, the
#: registry and upvalues (lupa's Python objects, its ``POBJECT`` metatable:
#: ``debug.setmetatable`` on a ``newproxy`` forges one and crashes the
#: process) and ``sethook`` (the dispatcher's watchdog). Text chunks still
#: load, through ``load``, ``loadstring``, ``loadfile``, ``dofile``, ``require``;
#: with ``interpreted``, the JIT never compiles them (see :func:`dispatcher`).
_SEAL = source.read("sandbox.lua")

#: A module that does not load is one line: luajit's "file:line: message"
#: (a syntax error without require's preamble, the file's name whole where
#: luajit cut it to its last 60 characters).
_LOADER = source.read("loader.lua")


def load_module(runtime, name: str, required_functions, jit=True):
    """Seal the runtime, ``require`` the service module, store it in the
    global ``name``, and check it defines every required function. Raises
    :class:`LuaStartError`. With ``jit=False``, the service's code, and all
    it loads later, runs interpreted (lapps's own code is still compiled)."""
    runtime.execute(_SEAL, not jit, name="=lapps.sandbox")
    wanted = runtime.table_from([f.encode() for f in required_functions])
    module, error = runtime.execute(_LOADER, name.encode(), wanted)
    if module is None:
        raise LuaStartError(error.decode("utf-8", "replace"))
    return module


_PROTECTED_CALL = _REPORT + source.read("protected_call.lua")


def protected(runtime, module, name: str):
    """A Python-callable wrapper of ``module.name`` that returns
    ``(True, result...)`` or ``(False, traceback)`` and never raises a Lua error."""
    return runtime.execute(_PROTECTED_CALL, module, name.encode())


#: Instructions between two looks at the clock by the watchdog.
CHECK_EVERY = 1000

_DISPATCHER = _REPORT + source.read("dispatcher.lua")


def dispatcher(runtime, handler_timeout: float):
    """The long-lived coroutine that runs a reactive instance's callbacks.

    Returns ``(step, suspend, bind)``; ``bind(module)`` names the service
    module (made before it is loaded, so that its modules can block).
    ``step(name, a, b, c)`` runs ``module[name]``
    and returns ``(True, "done", ok, value...)``, or ``(True, "suspend", kind,
    arg)`` when the callback made a blocking call through ``suspend``; the
    next ``step(result...)`` resumes it with that call's result.

    Each run (a step, up to its end or its next suspension) may last
    ``handler_timeout`` seconds: a count hook looks at the clock every
    ``CHECK_EVERY`` instructions while a step runs; past the deadline it
    raises a Lua error before every instruction of the service until
    control is back in the dispatcher, and the step returns ``(True,
    "timeout", False, traceback)``. An error unwinds cleanly, so the
    runtime stays usable.

    Compiled code never calls hooks, so the service's code must run
    interpreted: load it with ``load_module(..., jit=False)``, and
    ``jit.on`` is refused. lapps's own Lua (nljson, the module wrappers)
    stays compiled: a trace that reaches a function of the service aborts
    there. What a hook cannot stop: a long call of a C function (a
    pathological ``string.find`` pattern) and ``__gc`` finalizers, which
    LuaJIT runs with hooks off.
    """
    return runtime.execute(_DISPATCHER, handler_timeout, time.monotonic, CHECK_EVERY,
                           name="=lapps.dispatcher")
