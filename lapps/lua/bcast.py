"""``bcast``: process-wide broadcast channels, for LAppS-protocol reactive
services and standalone services. A message is validated and CBOR-encoded
once per send, whatever the number of subscribers."""

from lapps.lua import source
from lapps.lua.ws import lapps_payload
from lapps.protocols import messages

_BCAST = source.read("bcast.lua")

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
