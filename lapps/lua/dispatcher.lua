-- After report.lua (chunk =lapps.dispatcher): a reactive instance's coroutine and watchdog, runtime.py.
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
