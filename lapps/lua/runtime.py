"""Create the isolated LuaJIT runtime each service instance owns.

The Lua standard library is there (services are the operator's code, like
nginx config), the Python bridge is not: no ``python`` global, no eval or
builtins, and the few Python callables the lapps modules need are captured
as upvalues of Lua wrappers and refuse every attribute lookup.

lapps's own Lua (the dispatcher, the modules, nljson) is set up with the
whole library; :func:`load_module` then seals the runtime before the
service's first line runs (see ``_SEAL``): no way out of Lua into C, where
every Python object is, and no bytecode, which LuaJIT does not verify.
"""

import time

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

#: What the service's own code may not have. Each is a way to memory that
#: Lua does not check, hence to the Python objects there: the FFI; the raw
#: pointers of ``string.buffer``; ``jit.util`` (VM internals); C modules and
#: ``package.loadlib``; bytecode (LuaJIT trusts it); and in ``debug``, the
#: registry and upvalues (lupa's Python objects, its ``POBJECT`` metatable:
#: ``debug.setmetatable`` on a ``newproxy`` forges one and crashes the
#: process) and ``sethook`` (the dispatcher's watchdog). Text chunks still
#: load, through ``load``, ``loadstring``, ``loadfile``, ``dofile``, ``require``;
#: with ``interpreted``, the JIT never compiles them (see :func:`dispatcher`).
_SEAL = b"""
local interpreted = ...
package.loaded.ffi, package.loadlib = nil, nil
local preload, loaders = package.preload, package.loaders
for _, name in ipairs({ "ffi", "string.buffer", "jit.util", "jit.profile" }) do
  preload[name] = nil
end
loaders[3], loaders[4] = nil, nil  -- the C module searchers
debug = { traceback = debug.traceback, getinfo = debug.getinfo, getlocal = debug.getlocal }
package.loaded.debug = debug

local load_, loadfile_, searchpath, jit_off = load, loadfile, package.searchpath, jit.off
local error, format = error, string.format
local function service_chunk(chunk, err)  -- what every loader returns
  if err == "attempt to load chunk with wrong mode" then
    err = "bytecode is not allowed: lapps loads Lua source only"
  elseif interpreted and chunk ~= nil then
    jit_off(chunk, true)  -- and every function defined in it
  end
  return chunk, err
end
function load(chunk, name, mode, ...) return service_chunk(load_(chunk, name, "t", ...)) end
loadstring = load
function loadfile(file, mode, ...) return service_chunk(loadfile_(file, "t", ...)) end
function dofile(file)
  local chunk, err = loadfile(file)
  if chunk == nil then error(err, 0) end
  return chunk()
end
loaders[2] = function(name)  -- LuaJIT's own loads bytecode files too
  local file, missing = searchpath(name, package.path)
  if file == nil then return missing end
  local chunk, err = loadfile(file)
  if chunk == nil then
    error(format("error loading module '%s' from file '%s':\\n\\t%s", name, file, err), 0)
  end
  return chunk
end
"""

#: A module that does not load is one line: luajit's "file:line: message"
#: (a syntax error without require's preamble, the file's name whole where
#: luajit cut it to its last 60 characters).
_LOADER = b"""
local name, required = ...
local ok, module = pcall(require, name)
if not ok then
  local why = tostring(module):gsub("^error loading module '[^']*' from file '[^']*':\\n%s*", "")
  local file, cut = package.searchpath(name, package.path), why:match("^%.%.%.([^:]*):")
  if file and cut and file:sub(-#cut) == cut then why = file .. why:sub(#cut + 4) end
  return nil, (why:gsub(":?\\n%s*", "; "))
end
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


_PROTECTED_CALL = _REPORT + b"""
local module, name = ...
local xpcall = xpcall
return function(...) return xpcall(module[name], report, ...) end
"""


def protected(runtime, module, name: str):
    """A Python-callable wrapper of ``module.name`` that returns
    ``(True, result...)`` or ``(False, traceback)`` and never raises a Lua error."""
    return runtime.execute(_PROTECTED_CALL, module, name.encode())


#: Instructions between two looks at the clock by the watchdog.
CHECK_EVERY = 1000

_DISPATCHER = _REPORT + b"""
local budget, clock, check_every = ...
local module, co, body, step, finish, watch
local armed, started, expired = false, nil, false
local xpcall, error = xpcall, error
local yield, resume, running = coroutine.yield, coroutine.resume, coroutine.running
local sethook, getinfo = debug.sethook, debug.getinfo
local TIMEOUT = string.format("handler_timeout: the callback ran for more than %g s", budget)

-- compiled code never calls hooks: the service's code stays interpreted
jit.on = function() error("the JIT stays off for the code of reactive services "
                          .. "(handler_timeout)", 2) end
jit.attach = nil  -- its callbacks would run with hooks off

-- LuaJIT's hook is one for the whole state: it sees every coroutine
function watch()
  if not armed then return end
  if not expired then
    local now = clock()
    if started == nil then started = now return end
    if now - started <= budget then return end
    expired = true
    sethook(watch, "", 1)  -- now before every instruction: no pcall can swallow the stop
  end
  local running_fn = getinfo(2, "f").func
  if running_fn ~= body and running_fn ~= report and running_fn ~= step
      and running_fn ~= finish then
    error(TIMEOUT, 2)
  end
end
sethook(watch, "", check_every)

-- the dispatcher's own yields carry lapps's tags: the service may not yield it
coroutine.yield = function(...)
  if running() == co then
    error("coroutine.yield outside a coroutine of the service's own", 2)
  end
  return yield(...)
end
function body(name, a, b, c)
  while true do
    name, a, b, c = yield("done", xpcall(module[name], report, a, b, c))
  end
end
co = coroutine.create(body)
function finish(ok, tag, ...)
  armed = false
  if expired then
    expired = false
    sethook(watch, "", check_every)
    if tag == "done" and ... == false then tag = "timeout" end
  end
  return ok, tag, ...
end
-- each run of a callback, first or resumed, has the whole budget
function step(...)
  armed, started = true, nil
  return finish(resume(co, ...))
end
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
