-- The nginx peer's echo location (content_by_lua_file): a WebSocket server
-- from lua-resty-websocket that sends every text or binary frame back as
-- it came, answers pings, and closes when the client does.
local server = require("resty.websocket.server")

local ws, err = server:new({ timeout = 60000, max_payload_len = 16 * 1024 * 1024 })
if not ws then
  ngx.log(ngx.ERR, "echo: no WebSocket: ", err)
  return ngx.exit(400)
end

local replies = { text = ws.send_text, binary = ws.send_binary, ping = ws.send_pong }

while true do
  local data, kind = ws:recv_frame()
  if not data or kind == "close" then
    if kind == "close" then ws:send_close() end
    return
  end
  local reply = replies[kind]
  if reply and not reply(ws, data) then return end
end
