-- lhistory: a LAppS-protocol service for the bcast history, recovery and
-- presence tests. Each request calls one bcast function with the params
-- given and answers with everything it returned.
lhistory = {}

local function result(handler, values)
  return ws:send(handler, { cid = 0, status = 1, result = values })
end

local function packed(...)
  return { n = select("#", ...), ... }
end

-- Lua's results as an array: nil becomes false (an array holds no nil).
local function answer(handler, ...)
  local values = packed(...)
  local out = {}
  for i = 1, values.n do
    local v = values[i]
    if v == nil then v = false end
    out[i] = v
  end
  return result(handler, out)
end

local methods = {}

function methods.create(handler, p)
  if p[2] == nil then return answer(handler, bcast:create(p[1])) end
  return answer(handler, bcast:create(p[1], { history_size = p[2], history_ttl = p[3] }))
end

function methods.create_with(handler, p)  -- any options table, as given
  return answer(handler, bcast:create(p[1], p[2]))
end

function methods.subscribe(handler, p)
  local options = p[2]
  if options == nil then return answer(handler, bcast:subscribe(p[1], handler)) end
  return answer(handler, bcast:subscribe(p[1], handler, options))
end

function methods.typos(handler, p)  -- options as a Lua table, with a misspelt key
  return answer(handler, { bcast:create(p[1], { history_sise = 10 }) },
                { bcast:subscribe(p[1], handler, { offest = 3 }) })
end

function methods.odd(handler, p)  -- values no client can send: each call's results
  local inf, nan = 1 / 0, 0 / 0
  local out = {}
  for _, call in ipairs({
    function() return bcast:presence(inf) end,
    function() return bcast:history(inf) end,
    function() return bcast:subscribe(inf, handler) end,
    function() return bcast:send(nan, { cid = 7, message = {} }) end,
    function() return bcast:create(2 ^ 64) end,
    function() return bcast:create(p[1], { history_size = 10, history_ttl = 1e300 }) end,
    function() return bcast:unsubscribe(p[1], -1) end,
    function() return bcast:unsubscribe(p[1], 1.5) end,
    function() return bcast:unsubscribe(p[1], 2 ^ 64) end,
    function() return bcast:unsubscribe(p[1], nan) end,
  }) do
    out[#out + 1] = { call() }
  end
  return answer(handler, out)
end

function methods.unsubscribe(handler, p)
  return answer(handler, bcast:unsubscribe(p[1], handler))
end

function methods.publish(handler, p)
  -- p[2] sends of {cid = 7, message = {i, p[3]}}: the offsets bcast:send returned
  local offsets = {}
  for i = 1, p[2] do
    local ok, offset = bcast:send(p[1], { cid = 7, message = { i, p[3] } })
    if not ok then return answer(handler, false, offset, i) end
    offsets[i] = offset or false
  end
  return answer(handler, true, offsets)
end

function methods.publish_as(handler, p)  -- one message, as given
  return answer(handler, bcast:send(p[1], p[2]))
end

function methods.history(handler, p)
  return answer(handler, bcast:history(p[1], p[2], p[3]))
end

function methods.presence(handler, p)
  return answer(handler, bcast:presence(p[1]))
end

function methods.pid(handler, p)  -- the process serving this connection
  local stat = assert(io.open("/proc/self/stat", "r"))
  local pid = tonumber(stat:read("*l"):match("^(%d+)"))
  stat:close()
  return answer(handler, pid)
end

function lhistory.onStart() end
function lhistory.onDisconnect(handler) end
function lhistory.onShutdown() end

function lhistory.onMessage(handler, msg_type, message)
  local fn = methods[message.method]
  if fn == nil then return answer(handler, false, "no method " .. tostring(message.method)) end
  return fn(handler, message.params or {})
end

return lhistory
