-- The ws global of reactive services (send to, close connections): installed by ws.py.
local send_raw, send_lapps, close = ...
local select = select
local ws = {}
function ws:send(...)
  local n = select("#", ...)
  if n == 3 then return send_raw(...) end
  if n == 2 then return send_lapps(...) end
  return false, "usage: ws:send(handler, opcode, data) or ws:send(handler, nljson_object)"
end
function ws:close(handler, code, reason)
  return close(handler, code, reason)
end
return ws
