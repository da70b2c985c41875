-- The bcast global (broadcast channels): installed by bcast.py.
local create, subscribe, unsubscribe, send, history, presence, settle, limits = ...
local type, pairs, ipairs, pcall, floor = type, pairs, ipairs, pcall, math.floor
local readable_keys = { "history_size", "history_ttl", "epoch", "offset", "info" }
local bcast = {}
-- One value when there is no second (LAppS's bcast calls return just true).
local function results(a, b)
  if b == nil then return a end
  return a, b
end
-- (below 2^64: a channel id is an unsigned 64-bit integer, as in LAppS; this also refuses inf and NaN)
local function id_ok(id) return type(id) == "number" and id >= 0 and id < 2^64 and id == floor(id) end
local function whole(n, low, high)
  return type(n) == "number" and n == floor(n) and n >= low and n <= high
end
-- Options are a Lua table, whose keys must be among `known` (a typo is an
-- error, not a silent default), or an nljson object (e.g. a client's
-- params passed on): the known keys are read from it.
local function unknown(options, known)
  if type(options) ~= "table" then return nil end
  for key in pairs(options) do
    if not known[key] then return "unknown option " .. tostring(key) end
  end
end
local function readable(options)
  if type(options) == "table" then return options end
  if type(options) ~= "userdata" then return nil end
  local copy = {}
  for _, key in ipairs(readable_keys) do
    local ok, value = pcall(function() return options[key] end)
    if not ok then return nil end
    copy[key] = value
  end
  return copy
end

local CREATE_KEYS = { history_size = true, history_ttl = true }
function bcast:create(id, options)
  if not id_ok(id) then return false, "usage: bcast:create(channel_id), an unsigned integer" end
  if options == nil then return create(id) end
  local problem = unknown(options, CREATE_KEYS)
  options = readable(options)
  if options == nil then
    return false, "usage: bcast:create(channel_id [, {history_size = N, history_ttl = S}])"
  end
  if problem then return false, "bcast:create: " .. problem end
  local size, ttl = options.history_size, options.history_ttl
  if size == nil and ttl == nil then return create(id) end
  if not whole(size, 1, limits.max_size) then
    return false, "bcast:create: history_size must be an integer from 1 to " .. limits.max_size
  end
  if ttl ~= nil and not (type(ttl) == "number" and ttl > 0 and ttl <= limits.max_ttl) then
    return false, "bcast:create: history_ttl must be a number of seconds above 0, at most "
      .. limits.max_ttl
  end
  return create(id, size, ttl)
end

local SUBSCRIBE = "usage: bcast:subscribe(channel_id, handler [, {epoch = E, offset = K, info = S}])"
local SUBSCRIBE_KEYS = { epoch = true, offset = true, info = true }
function bcast:subscribe(id, handler, options)
  if not id_ok(id) or type(handler) ~= "number" then return false, SUBSCRIBE end
  if options == nil then return results(settle(false, subscribe(id, handler))) end
  local problem = unknown(options, SUBSCRIBE_KEYS)
  options = readable(options)
  if options == nil then return false, SUBSCRIBE end
  if problem then return false, "bcast:subscribe: " .. problem end
  local epoch, offset, info = options.epoch, options.offset, options.info
  if (epoch == nil) ~= (offset == nil) then
    return false, "bcast:subscribe: epoch and offset go together"
  end
  if epoch ~= nil and (type(epoch) ~= "string" or not whole(offset, 0, 2^53)) then
    return false, "bcast:subscribe: epoch must be a string and offset an integer from 0"
  end
  if info ~= nil and (type(info) ~= "string" or #info > limits.max_info) then
    return false, "bcast:subscribe: info must be a string of at most " .. limits.max_info .. " bytes"
  end
  return results(settle(false, subscribe(id, handler, epoch ~= nil, epoch, offset, info)))
end

function bcast:unsubscribe(id, handler)
  if not id_ok(id) or type(handler) ~= "number" then
    return false, "usage: bcast:unsubscribe(channel_id, handler)"
  end
  return unsubscribe(id, handler)
end

function bcast:send(id, message)
  if not id_ok(id) then return false, "usage: bcast:send(channel_id, nljson_object)" end
  return results(settle(false, send(id, message)))
end

function bcast:history(id, after, limit)
  after, limit = after or 0, limit or limits.max_limit
  if not id_ok(id) or not whole(after, 0, 2^53) or not whole(limit, 1, limits.max_limit) then
    return false, "usage: bcast:history(channel_id [, after_offset [, limit up to "
      .. limits.max_limit .. "]])"
  end
  return results(settle(false, history(id, after, limit)))
end

function bcast:presence(id)
  if not id_ok(id) then return false, "usage: bcast:presence(channel_id)" end
  return results(settle(false, presence(id)))
end
return bcast
