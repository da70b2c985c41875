-- echo_lapps: a LAppS-protocol service. Clients log in, echo parameters
-- back, and subscribe to the server time (cid 5, bcast channel 1000, which
-- keeps a history) and to a large blob (cid 6, bcast channel 2000). Sessions
-- live in this instance's state, which connection affinity makes safe.
echo_lapps = {}

local users = { admin = "admin", guest = "guest" }
local sessions = {}          -- tostring(handler) -> authkey
local channels = { [5] = 1000, [6] = 2000 }

local function random_key()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(16)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function reply(handler, result)
  local msg = nljson.decode('{"cid":0,"status":1,"result":[]}')
  msg.result = result
  return ws:send(handler, msg)
end

local function fail(handler, code, text, close_code)
  local msg = nljson.decode('{"cid":0,"status":0,"error":{}}')
  msg.error = { code = code, message = text }
  ws:send(handler, msg)
  if close_code then ws:close(handler, close_code) end
  return true
end

local function authenticated(handler, params)
  local key = sessions[tostring(handler)]
  local given = params and params[1]
  return key ~= nil and type(given) == "userdata" and given.authkey == key
end

function echo_lapps.onStart()
  bcast:create(1000, { history_size = 300, history_ttl = 300 })
  bcast:create(2000)
end

local requests = {}

function requests.login(handler, message)
  local credentials = message.params[1]
  local user = type(credentials) == "userdata" and credentials.user
  if type(user) ~= "string" or users[user] == nil or users[user] ~= credentials.password then
    return fail(handler, 10, "Authentication error", 1000)
  end
  local key = random_key()
  sessions[tostring(handler)] = key
  return reply(handler, { { authkey = key } })
end

function requests.echo(handler, message)
  if not authenticated(handler, message.params) then
    return fail(handler, -32000, "Not authenticated. Permission denied", 1000)
  end
  return reply(handler, message.params)
end

-- The recovery pattern: params [session, {cid = N, epoch = E, offset = K}].
-- A client that reconnects sends the last epoch and offset it saw on cid N
-- and gets every message after them that the channel still holds, then the
-- live ones; the reply [{recovered, epoch, offset}] says whether that was
-- possible (recovered = false: start afresh, e.g. after a server restart).
-- Without epoch and offset, or on a channel without history, it is a plain
-- subscribe.
function requests.subscribe(handler, message)
  if not authenticated(handler, message.params) then
    return fail(handler, -32000, "Not authenticated. Permission denied", 1000)
  end
  local wanted = message.params[2]
  local channel = type(wanted) == "userdata" and channels[wanted.cid]
  if not channel then
    return fail(handler, -32602, "Invalid params: no channel with this cid")
  end
  local position = nil
  if wanted.epoch ~= nil or wanted.offset ~= nil then
    position = { epoch = wanted.epoch, offset = wanted.offset }
  end
  local ok, state = bcast:subscribe(channel, handler, position)
  if not ok then
    return fail(handler, -32602, "Invalid params: " .. tostring(state))
  end
  return reply(handler, { state or { recovered = false, epoch = "", offset = 0 } })
end

local notifications = {}

function notifications.subscribe(handler, message)
  local channel = channels[message.cid]
  if channel and authenticated(handler, message.params) then
    bcast:subscribe(channel, handler)
  end
  return true
end

function notifications.logout(handler, message)
  if authenticated(handler, message.params) then
    sessions[tostring(handler)] = nil
  end
  return true
end

function echo_lapps.onMessage(handler, msg_type, message)
  if msg_type == 1 then
    return fail(handler, -32600, "This server does not accept Client Notifications", 1003)
  elseif msg_type == 2 then
    local fn = notifications[message.method]
    return fn == nil or fn(handler, message)
  elseif msg_type == 4 then
    local fn = requests[message.method]
    if fn then return fn(handler, message) end
  end
  return fail(handler, -32601, "No such method", 1003)
end

function echo_lapps.onDisconnect(handler)
  for _, channel in pairs(channels) do bcast:unsubscribe(channel, handler) end
  sessions[tostring(handler)] = nil
end

function echo_lapps.onShutdown()
end

return echo_lapps
