-- blaster: a LAppS-protocol service for the backpressure tests. "subscribe"
-- joins a bcast channel; "blast" publishes numbered blobs on it as fast as
-- one handler can, then answers the caller.
blaster = {}

local blobs = {}

local function result(handler, values)
  return ws:send(handler, { cid = 0, status = 1, result = values })
end

local methods = {}

-- params: channel
function methods.subscribe(handler, message)
  local channel = message.params[1]
  bcast:create(channel)
  return result(handler, { bcast:subscribe(channel, handler) })
end

-- params: channel, first number, count, blob size; each broadcast is
-- {cid = 7, message = {number, blob}}
function methods.blast(handler, message)
  local params = message.params
  local channel, first, count, size = params[1], params[2], params[3], params[4]
  local blob = blobs[size] or string.rep("b", size)
  blobs[size] = blob
  for number = first, first + count - 1 do
    local ok, err = bcast:send(channel, { cid = 7, message = { number, blob } })
    if not ok then return result(handler, { false, err }) end
  end
  return result(handler, { count })
end

function blaster.onStart() end

function blaster.onMessage(handler, msg_type, message)
  return methods[message.method](handler, message)
end

function blaster.onDisconnect(handler) end

function blaster.onShutdown() end

return blaster
