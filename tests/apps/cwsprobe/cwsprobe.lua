-- cwsprobe: a standalone cws client for tests. settings.scenario picks what
-- it does against settings.target; every observation is a "cwsprobe:" line.
cwsprobe = {}

local inside = false      -- true only while cws:eventLoop() runs
local closed_handler
local settled = false     -- onopen or onerror has run

local function say(...)
  print("cwsprobe: " .. table.concat({ ... }, " "))
end

local callbacks = {
  onopen = function(h) settled = true; say("onopen", tostring(inside)) end,
  onmessage = function(h, msg, opcode) say("onmessage", msg, opcode, tostring(inside)) end,
  onerror = function(h, msg) settled = true; say("onerror", msg, tostring(inside)) end,
  onclose = function(h, payload)
    closed_handler = h
    if payload then
      local code = payload:byte(1) * 256 + payload:byte(2)
      say("onclose", code, payload:sub(3), tostring(inside))
    else
      say("onclose", "nopayload", tostring(inside))
    end
  end,
}

local function loop_for(ms, until_settled)
  local sleeper, stop = nap:new(), time.now() + ms
  while time.now() < stop and not must_stop() and not (until_settled and settled) do
    inside = true
    cws:eventLoop()
    inside = false
    sleeper:usleep(5000)   -- events that arrive now wait for the next loop
  end
end

function cwsprobe.init() end

function cwsprobe.run()
  local sock, err = cws:new(settings.target, callbacks)
  if not sock then
    say("new failed:", err)
    return
  end
  say("new ok")
  local h = sock.handler
  if settings.scenario == "echo" then
    cws:send(h, "héllo", 1)
    cws:send(h, "bin", 2)
    loop_for(500)
    sock:close()
    say("closed locally")
    local ok, msg = cws:send(h, "late", 1)
    say("send after local close", tostring(ok), tostring(msg))
    loop_for(200)
  elseif settings.scenario == "serverclose" then
    cws:send(h, "close 4001", 1)
    loop_for(500)
    local ok, msg = cws:send(h, "late", 1)
    say("send after close", tostring(ok), tostring(msg), tostring(closed_handler == h))
  elseif settings.scenario == "connect" then
    loop_for(10000, true)
  end
  say("done")
end

return cwsprobe
