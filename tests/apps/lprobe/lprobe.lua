-- lprobe: a LAppS-protocol service for tests. Requests are answered with
-- what the server classified; methods provoke bcast, nap and errors.
lprobe = {}

local function result(handler, values)
  return ws:send(handler, { cid = 0, status = 1, result = values })
end

local methods = {}

function methods.classify(handler, msg_type, message)
  local params = message.params
  if params == nil then params = "none" end
  local ok, err = result(handler, { msg_type, message.method, params })
  -- params it cannot send back (a byte string that is not UTF-8): say why
  return ok or result(handler, { msg_type, message.method, err })
end

function methods.sleep(handler, msg_type, message)
  local seconds = message.params[1]
  local before = time.now()
  print("lprobe::sleeping " .. handler)
  nap:new():usleep(seconds * 1000000)
  return result(handler, { "slept", time.now() - before })
end

function methods.subscribe(handler, msg_type, message)
  bcast:create(message.params[1])
  return result(handler, { bcast:subscribe(message.params[1], handler) })
end

function methods.subscribe_missing(handler, msg_type, message)
  return result(handler, { bcast:subscribe(message.params[1], handler) })
end

function methods.publish(handler, msg_type, message)
  local channel, count = message.params[1], message.params[2]
  for i = 1, count do
    bcast:send(channel, { cid = 7, message = { i, message.params[3] } })
  end
  return result(handler, { count })
end

function methods.publish_counted(handler, msg_type, message)
  -- as publish, answering how many sends the bus accepted
  local channel, count, accepted = message.params[1], message.params[2], 0
  for i = 1, count do
    if bcast:send(channel, { cid = 7, message = { i, message.params[3] } }) then
      accepted = accepted + 1
    end
  end
  return result(handler, { accepted })
end

function methods.bad(handler, msg_type, message)
  local ok, err = ws:send(handler, { cid = 0, status = 1 })
  return result(handler, { tostring(ok), err })
end

function methods.oon(handler, msg_type, message)
  return ws:send(handler, { cid = 9, message = { "pushed" } })
    and result(handler, { "after" })
end

function methods.error(handler, msg_type, message)
  return ws:send(handler, { cid = 0, status = 0, error = { code = 42, message = "as asked" } })
end

function methods.pid(handler, msg_type, message)
  -- the worker process this connection is served by (/proc/self/stat starts with the pid)
  local stat = assert(io.open("/proc/self/stat", "r"))
  local pid = tonumber(stat:read("*l"):match("^(%d+)"))
  stat:close()
  return result(handler, { pid })
end

function methods.globals(handler, msg_type, message)
  local names = { "nljson", "ws", "bcast", "instance_id", "must_stop", "nap", "time", "murmur",
                  "pam_auth", "mqr", "cws", "python" }
  local seen = {}
  for i, name in ipairs(names) do seen[i] = name .. "=" .. type(_G[name]) end
  return result(handler, seen)
end

function methods.unsendable(handler, msg_type, message)
  -- what ws:send and nljson.from_cbor answer for values they cannot take
  local cyclic = {}
  cyclic.again = cyclic
  local outcomes = {}
  for i, value in ipairs({ cyclic, "\255", { ["\255"] = 1 } }) do
    local ok, err = ws:send(handler, { cid = 0, status = 1, result = { value } })
    outcomes[i] = { tostring(ok), err }
  end
  local ok, err = pcall(nljson.from_cbor, "\194\65\1") -- a bignum: tag 2, then h'01'
  outcomes[#outcomes + 1] = { tostring(ok), err }
  return result(handler, outcomes)
end

function lprobe.onStart() end

function lprobe.onMessage(handler, msg_type, message)
  local method = methods[message.method] or methods.classify
  return method(handler, msg_type, message)
end

function lprobe.onDisconnect(handler)
  print("lprobe::onDisconnect " .. handler)
end

function lprobe.onShutdown() end

return lprobe
