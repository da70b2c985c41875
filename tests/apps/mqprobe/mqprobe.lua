-- mqprobe: a raw reactive service driving mqr from text commands
-- "<command> <queue> [<argument>]"; replies with what happened.
mqprobe = {}

local function shown(value)
  if type(value) == "userdata" then return nljson.encode(value) end
  return type(value) .. ":" .. tostring(value)
end

local commands = {}

function commands.echo(queue, arg) return queue .. (arg ~= "" and " " .. arg or "") end

function commands.post(queue, arg)
  local ok, err = mqr.create(queue):post(nljson.decode(arg))
  return tostring(ok) .. " " .. tostring(err)
end

function commands.postraw(queue, arg)
  local ok, err = mqr.create(queue):post(arg)
  return tostring(ok) .. " " .. tostring(err)
end

function commands.postnum(queue, arg)
  local ok, err = mqr.create(queue):post(tonumber(arg))
  return tostring(ok) .. " " .. tostring(err)
end

function commands.posttrue(queue)
  local ok, err = mqr.create(queue):post(true)
  return tostring(ok) .. " " .. tostring(err)
end

-- a string that is not UTF-8 comes back byte for byte
function commands.binary(queue)
  local q, bytes = mqr.create(queue), "\0\255\254 binary"
  assert(q:post(bytes))
  return tostring(q:try_recv() == bytes)
end

function commands.recv(queue)
  local value, err = mqr.create(queue):recv()
  return shown(value) .. " " .. tostring(err)
end

function commands.try(queue)
  local value, err = mqr.create(queue):try_recv()
  return shown(value) .. " " .. tostring(err)
end

-- posts {"s": "xxx..."} (arg bytes)
function commands.big(queue, arg)
  local ok, err = mqr.create(queue):post({ s = string.rep("x", tonumber(arg)) })
  return tostring(ok) .. " " .. tostring(err)
end

-- recv inside a coroutine of the service's own: a Lua error (cannot suspend)
function commands.cororecv(queue)
  return coroutine.wrap(function() return mqr.create(queue):recv() end)()
end

-- posts {"n":1} .. {"n":count}; reports how many were accepted and refused
function commands.fill(queue, arg)
  local q, ok, full, first = mqr.create(queue), 0, 0, nil
  for n = 1, tonumber(arg) do
    local posted, err = q:post({ n = n })
    if posted then ok = ok + 1 else full = full + 1; first = first or err end
  end
  return "ok=" .. ok .. " full=" .. full .. " err=" .. tostring(first)
end

-- posts strings of arg bytes, "1:xx..", "2:xx..", .. until one is refused;
-- reports how many were accepted and why the next was not
function commands.fillraw(queue, arg)
  local q, size, n = mqr.create(queue), tonumber(arg), 0
  while true do
    local prefix = (n + 1) .. ":"
    local posted, err = q:post(prefix .. string.rep("x", size - #prefix))
    if not posted then return "ok=" .. n .. " err=" .. tostring(err) end
    n = n + 1
  end
end

-- takes (at most arg of) what is queued without waiting; replies with the
-- numbers fillraw put in front
function commands.drainraw(queue, arg)
  local q, got = mqr.create(queue), {}
  while #got < (tonumber(arg) or math.huge) do
    local value = q:try_recv()
    if value == nil then break end
    got[#got + 1] = value:match("^(%d+):")
  end
  return table.concat(got, ",")
end

-- takes what is queued without waiting; replies with the numbers
function commands.drain(queue)
  local q, got = mqr.create(queue), {}
  while true do
    local value = q:try_recv()
    if value == nil then break end
    got[#got + 1] = tostring(value.n)
  end
  return table.concat(got, ",")
end

-- posts a table and an nljson value, then changes both (nested parts too)
function commands.copy(queue)
  local q = mqr.create(queue)
  local t = { name = "orig", list = { 1, 2, 3 } }
  local j = nljson.decode('{"name":"orig","list":[1,2,3]}')
  assert(q:post(t))
  assert(q:post(j))
  t.name, t.list[1] = "changed", 99
  j.name = "changed"
  local list = j.list
  list[1] = 99
  return "posted " .. nljson.encode(j)
end

-- receives a value, changes it, and reports both what came and the change
function commands.mutate(queue)
  local value = mqr.create(queue):recv()
  local before = nljson.encode(value)
  value.name = "mutated"
  return before .. " " .. nljson.encode(value)
end

function commands.usage(queue)
  local q = mqr.create(queue)
  local out = {}
  local function add(a, b) out[#out + 1] = tostring(a) .. "/" .. tostring(b) end
  add(mqr.create())
  add(mqr.create(""))
  add(mqr:create("x"))
  add(q.post(5))
  add(q:post(nil))
  add(q:post(print))
  add(q:post(io.stdout))
  add(q:post({ f = print }))
  add(q.recv())
  add(q.try_recv())
  add(q:try_recv())
  return table.concat(out, "\n")
end

-- the worker process serving this connection ("pid -"; /proc/self/stat starts with it)
function commands.pid()
  local stat = assert(io.open("/proc/self/stat", "r"))
  local pid = stat:read("*l"):match("^(%d+)")
  stat:close()
  return pid
end

function mqprobe.onStart() end

function mqprobe.onMessage(handler, opcode, message)
  local cmd, queue, arg = message:match("^(%a+) (%S+) ?(.*)$")
  local reply = commands[cmd](queue, arg)
  return ws:send(handler, 1, reply)
end

function mqprobe.onDisconnect(handler) end

function mqprobe.onShutdown()
  local value, err = mqr.create("never"):recv()
  print("mqprobe::onShutdown recv=" .. tostring(value) .. " " .. tostring(err))
end

return mqprobe
