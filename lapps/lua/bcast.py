"""``bcast``: process-wide broadcast channels, for LAppS-protocol reactive
services and standalone services. A message is validated and CBOR-encoded
once per send, whatever the number of subscribers."""

from lapps.lua.ws import lapps_payload
from lapps.protocols import messages

_BCAST = b"""
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
"""

def install(context):
    channels, nljson = context.parts.broadcasts, context.nljson

    def send(channel, obj):
        payload, problem = lapps_payload(nljson, obj, messages.broadcast_problem)
        if problem is not None:
            return False, problem
        if not channels.exists(channel):
            return False, b"Broadcast with id %d is not found" % channel
        return channels.publish(channel, payload)

    runtime = context.runtime
    runtime.globals()[b"bcast"] = runtime.execute(
        _BCAST, channels.create, channels.subscribe, channels.unsubscribe, send)
