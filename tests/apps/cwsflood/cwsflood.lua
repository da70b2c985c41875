-- cwsflood: a raw service that sends through cws as fast as it can.
-- "connect URL" opens the client; "opened" polls once and answers whether
-- onopen has run; "flood N SIZE" sends up to N binary
-- messages of SIZE bytes and answers how many went and why it stopped;
-- "send" sends one small message and answers what cws:send said.
cwsflood = {}

local sock
local opened = false

function cwsflood.onStart() end

function cwsflood.onMessage(handler, opcode, message)
  local cmd, arg = message:match("^(%a+)%s*(.*)$")
  if cmd == "connect" then
    local err
    sock, err = cws:new(arg, { onopen = function() opened = true end })
    return ws:send(handler, 1, sock and "connected" or ("failed: " .. err))
  elseif cmd == "opened" then
    cws:eventLoop()
    return ws:send(handler, 1, tostring(opened))
  elseif cmd == "flood" then
    local count, size = arg:match("^(%d+) (%d+)$")
    local blob = string.rep("f", tonumber(size))
    for i = 1, tonumber(count) do
      local ok, err = cws:send(sock.handler, blob, 2)
      if not ok then return ws:send(handler, 1, "sent " .. (i - 1) .. ": " .. err) end
    end
    return ws:send(handler, 1, "sent " .. count)
  elseif cmd == "send" then
    local ok, err = cws:send(sock.handler, "small", 2)
    return ws:send(handler, 1, tostring(ok) .. " " .. tostring(err))
  end
  return ws:send(handler, 1, "?")
end

function cwsflood.onDisconnect(handler)
  if sock then sock:close() end
end

function cwsflood.onShutdown() end

return cwsflood
