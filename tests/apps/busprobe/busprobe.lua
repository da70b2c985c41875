-- busprobe: a LAppS-protocol service for the bus tests. Each method calls
-- one bcast or mqr function and answers with what it returned, so a test
-- sees the true/false and the message a service would see.
busprobe = {}

local function answer(handler, ...)
  local results = { n = select("#", ...), ... }
  for i = 1, results.n do
    local v = results[i]
    if type(v) == "userdata" then results[i] = nljson.encode(v)
    elseif v == nil then results[i] = "nil" end
  end
  results.n = nil
  return ws:send(handler, { cid = 0, status = 1, result = results })
end

local methods = {}

function methods.create(handler, p) return answer(handler, bcast:create(p[1])) end
function methods.subscribe(handler, p) return answer(handler, bcast:subscribe(p[1], handler)) end
function methods.send(handler, p)
  return answer(handler, bcast:send(p[1], { cid = 7, message = { p[2] } }))
end
function methods.post(handler, p) return answer(handler, mqr.create(p[1]):post(p[2])) end
function methods.recv(handler, p) return answer(handler, mqr.create(p[1]):recv()) end
function methods.try(handler, p) return answer(handler, mqr.create(p[1]):try_recv()) end
function methods.ping(handler, p) return answer(handler, "pong") end

function busprobe.onStart() end

function busprobe.onMessage(handler, msg_type, message)
  return methods[message.method](handler, message.params)
end

function busprobe.onDisconnect(handler) end
function busprobe.onShutdown() end

return busprobe
