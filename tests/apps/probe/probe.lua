-- probe: a raw service for tests. Each instance has its own tag and message
-- counter, so replies show affinity and order; commands provoke errors.
probe = {}

local tag
local count = 0

function probe.onStart()
  tag = tostring(probe):match("0x%x+")
end

local function reply(handler, text)
  return ws:send(handler, 1, text)
end

function probe.onMessage(handler, opcode, message)
  count = count + 1
  local cmd, arg = message:match("^(%a+)%s*(.*)$")
  if cmd == "who" then
    return reply(handler, tag .. " " .. count .. " " .. handler .. " " .. arg)
  elseif cmd == "boom" then
    error("boom requested")
  elseif cmd == "nothing" then
    return
  elseif cmd == "close" then
    local ok, err = ws:close(handler, tonumber(arg), "bye")
    if not ok then return reply(handler, "refused: " .. err) end
    return true
  elseif cmd == "badopcode" then
    local ok, err = ws:send(handler, 7, "x")
    return reply(handler, tostring(ok) .. " " .. tostring(err))
  elseif cmd == "badutf" then
    local ok, err = ws:send(handler, 1, "\255\254")
    return reply(handler, tostring(ok) .. " " .. tostring(err))
  elseif cmd == "python" then
    return reply(handler, type(python) .. " " .. type(ws.send))
  elseif cmd == "yield" then
    coroutine.yield("done", true, true)
    return reply(handler, "yield returned")
  elseif cmd == "pyreach" then
    local found = {}
    local loaded = pcall(require, "python")
    found[#found + 1] = "require=" .. tostring(loaded)
    for k, v in pairs(debug.getregistry and debug.getregistry() or {}) do  -- sealed away
      if type(v) == "table" and (v.as_itemgetter or v.eval or k == "python") then
        found[#found + 1] = "registry:" .. tostring(k)
      end
    end
    for k, v in pairs(package.loaded) do
      if type(v) == "table" and v.as_itemgetter then found[#found + 1] = "loaded:" .. k end
    end
    return reply(handler, table.concat(found, " "))
  elseif cmd == "globals" then
    return reply(handler, "ws=" .. type(ws) .. " bcast=" .. type(bcast) .. " nljson=" .. type(nljson)
                 .. " must_stop=" .. type(must_stop) .. " nap=" .. type(nap))
  end
  return ws:send(handler, opcode, message)
end

function probe.onDisconnect(handler)
  local ok, err = ws:send(handler, 1, "too late")
  print("probe::onDisconnect " .. handler .. " " .. tostring(ok) .. " " .. tostring(err))
end

function probe.onShutdown()
  print("probe::onShutdown " .. tag)
end

return probe
