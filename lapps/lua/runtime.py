"""Create the isolated LuaJIT runtime each service instance owns.

The Lua standard library is there (services are the operator's code, like
nginx config), the Python bridge is not: no ``python`` global, no eval or
builtins, and the few Python callables the lapps modules need are captured
as upvalues of Lua wrappers and refuse every attribute lookup.
"""

from lupa import luajit21


class LuaStartError(Exception):
    """A service module could not be loaded into a runtime."""


def _no_attributes(obj, name, is_setting):
    raise AttributeError("Python objects are opaque to Lua")


_unbuffered_stdout = []


def new_runtime(max_memory: int, lua_path: str):
    """A fresh LuaJIT 2.1 state with ``lua_path`` searched before the default."""
    runtime = luajit21.LuaRuntime(
        register_eval=False, register_builtins=False, unpack_returned_tuples=True,
        encoding=None, attribute_filter=_no_attributes, max_memory=max_memory)
    runtime.execute(b"""
        python, package.loaded.python = nil, nil
        -- print() writes each line with one unbuffered write, at once: lines
        -- from several instance threads and the server's log never mix
        local select, tostring, concat, stdout = select, tostring, table.concat, io.stdout
        function print(...)
          local parts = {}
          for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
          stdout:write(concat(parts, "\\t") .. "\\n")
        end
        local extra = ...
        if #extra > 0 then package.path = extra .. ";" .. package.path end
    """, lua_path.encode())
    if not _unbuffered_stdout:  # C stdio is shared by every state: set it once
        runtime.execute(b'io.stdout:setvbuf("no")')
        _unbuffered_stdout.append(True)
    return runtime


#: The error handler every protected call uses: the message and a traceback.
_REPORT = b"""
local traceback, tostring = debug.traceback, tostring
local function report(e) return traceback(tostring(e), 2) end
"""

_LOADER = _REPORT + b"""
local name, required = ...
local ok, module = xpcall(require, report, name)
if not ok then return nil, module end
if type(module) ~= "table" then
  return nil, "module " .. name .. " returned " .. type(module) .. " instead of a table"
end
for _, fn in ipairs(required) do
  if type(module[fn]) ~= "function" then
    return nil, "module " .. name .. " has no function " .. fn
  end
end
_G[name] = module
return module, false
"""


def load_module(runtime, name: str, required_functions):
    """``require`` the service module, store it in the global ``name``, and
    check it defines every required function. Raises :class:`LuaStartError`."""
    wanted = runtime.table_from([f.encode() for f in required_functions])
    module, error = runtime.execute(_LOADER, name.encode(), wanted)
    if module is None:
        raise LuaStartError(error.decode("utf-8", "replace"))
    return module


_PROTECTED_CALL = _REPORT + b"""
local module, name = ...
local xpcall = xpcall
return function(...) return xpcall(module[name], report, ...) end
"""


def protected(runtime, module, name: str):
    """A Python-callable wrapper of ``module.name`` that returns
    ``(True, result...)`` or ``(False, traceback)`` and never raises a Lua error."""
    return runtime.execute(_PROTECTED_CALL, module, name.encode())


_DISPATCHER = _REPORT + b"""
local module, co
local xpcall, error = xpcall, error
local yield, resume, running = coroutine.yield, coroutine.resume, coroutine.running
-- the dispatcher's own yields carry lapps's tags: the service may not yield it
coroutine.yield = function(...)
  if running() == co then
    error("coroutine.yield outside a coroutine of the service's own", 2)
  end
  return yield(...)
end
co = coroutine.create(function(name, a, b, c)
  while true do
    name, a, b, c = yield("done", xpcall(module[name], report, a, b, c))
  end
end)
local function step(...) return resume(co, ...) end
local function suspend(kind, arg)
  if running() ~= co then
    error("a blocking call cannot run here (only directly in the service's callbacks, "
          .. "not inside a coroutine of its own)", 3)
  end
  return yield("suspend", kind, arg)
end
local function bind(m) module = m end
return step, suspend, bind
"""


def dispatcher(runtime):
    """The long-lived coroutine that runs a reactive instance's callbacks.

    Returns ``(step, suspend, bind)``; ``bind(module)`` names the service
    module (made before it is loaded, so that its modules can block).
    ``step(name, a, b, c)`` runs ``module[name]``
    and returns ``(True, "done", ok, value...)``, or ``(True, "suspend", kind,
    arg)`` when the callback made a blocking call through ``suspend``; the
    next ``step(result...)`` resumes it with that call's result.
    """
    return runtime.execute(_DISPATCHER)
