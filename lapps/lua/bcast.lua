-- The bcast global (broadcast channels): installed by bcast.py.
local create, subscribe, unsubscribe, send = ...
local type = type
local bcast = {}
local function id_ok(id) return type(id) == "number" and id >= 0 and id == math.floor(id) end
function bcast:create(id)
  if not id_ok(id) then return false, "usage: bcast:create(channel_id), an unsigned integer" end
  return create(id)
end
local function membership(name, change)
  return function(self, id, handler)
    if not id_ok(id) or type(handler) ~= "number" then
      return false, "usage: bcast:" .. name .. "(channel_id, handler)"
    end
    return change(id, handler)
  end
end
bcast.subscribe = membership("subscribe", subscribe)
bcast.unsubscribe = membership("unsubscribe", unsubscribe)
function bcast:send(id, message)
  if not id_ok(id) then return false, "usage: bcast:send(channel_id, nljson_object)" end
  return send(id, message)
end
return bcast
