-- flaky: loads once; loaded again (a rebuild), it fails. "grow" exhausts
-- the instance's memory; anything else is echoed.
local marker = settings.marker
if io.open(marker) then error("loaded twice") end
io.open(marker, "w"):close()

flaky = {}
function flaky.onStart() end
function flaky.onMessage(handler, opcode, message)
  if message == "grow" then
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end
  end
  return ws:send(handler, opcode, message)
end
function flaky.onDisconnect(handler) end
function flaky.onShutdown() end
return flaky
