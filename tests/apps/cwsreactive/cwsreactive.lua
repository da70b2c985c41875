-- cwsreactive: a raw reactive service that uses cws through the coroutine
-- model: "connect URL" opens a client (suspending only this instance),
-- "poll" runs cws:eventLoop() and answers with what the callbacks saw.
cwsreactive = {}

local seen = {}
local sock

local callbacks = {
  onopen = function(h) seen[#seen + 1] = "open" end,
  onmessage = function(h, msg) seen[#seen + 1] = "message:" .. msg end,
}

function cwsreactive.onStart() end

function cwsreactive.onMessage(handler, opcode, message)
  local cmd, arg = message:match("^(%a+)%s*(.*)$")
  if cmd == "connect" then
    local err
    sock, err = cws:new(arg, callbacks)
    if not sock then return ws:send(handler, 1, "failed: " .. err) end
    cws:send(sock.handler, "ping", 1)
    return ws:send(handler, 1, "connected")
  elseif cmd == "poll" then
    cws:eventLoop()
    local text = table.concat(seen, ",")
    seen = {}
    return ws:send(handler, 1, text)
  end
  return ws:send(handler, 1, "?")
end

function cwsreactive.onDisconnect(handler)
  if sock then sock:close() end
end

function cwsreactive.onShutdown() end

return cwsreactive
