-- hog: a raw service that eats its memory on request ("grow"), keeps what
-- it is sent ("keep"), and echoes anything else.
hog = {}
local kept = {}
function hog.onStart() end
function hog.onMessage(handler, opcode, message)
  if message == "grow" then
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end
  elseif message:sub(1, 4) == "keep" then
    kept[#kept + 1] = message
    return ws:send(handler, 1, "kept " .. #kept)
  end
  return ws:send(handler, opcode, message)
end
function hog.onDisconnect(handler) end
function hog.onShutdown() end
return hog
