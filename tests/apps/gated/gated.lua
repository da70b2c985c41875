-- gated: a raw service whose instance waits at a gate. "hold" suspends it in
-- an mqr recv on queue "gate" until something is posted there (by another
-- service); anything else is echoed. Disconnects are printed.
gated = {}

function gated.onStart() end

function gated.onMessage(handler, opcode, message)
  if message == "hold" then
    local value, err = mqr.create("gate"):recv()
    return ws:send(handler, 1, "released " .. tostring(value or err))
  end
  return ws:send(handler, opcode, message)
end

function gated.onDisconnect(handler)
  print("gated::onDisconnect " .. handler)
end

function gated.onShutdown() end

return gated
