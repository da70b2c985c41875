-- recorder: a raw service for the stop and reload tests. It echoes, answers
-- "version" with settings.version, and prints each onStart, onDisconnect and
-- onShutdown with settings.label and settings.version, so a test can see
-- which version of which service saw what. Other services reuse it by name
-- (newcomer.lua).
local recorder = {}

local function says(event, detail)
  print(settings.label .. "::" .. event .. " " .. settings.version .. (detail or ""))
end

function recorder.onStart() says("onStart") end

function recorder.onMessage(handler, opcode, message)
  if message == "version" then return ws:send(handler, 1, settings.version) end
  return ws:send(handler, opcode, message)
end

function recorder.onDisconnect(handler) says("onDisconnect", " " .. handler) end

function recorder.onShutdown() says("onShutdown") end

return recorder
