-- benchmark: the LAppS load test. Each instance opens `connections` cws
-- connections to `target` and keeps one `message_size`-byte message in
-- flight on each (every echo is sent straight back), printing its rate about
-- once a second. Settings come from the descriptor's "settings" object.
benchmark = {}

local target, connections, message
local sockets = {}
local received = 0

local callbacks = {}

function callbacks.onopen(handler)
  local ok, err = cws:send(handler, message, 2)
  if not ok then print("Error on websocket send at handler " .. handler .. ": " .. tostring(err)) end
end

function callbacks.onmessage(handler, msg, opcode)
  received = received + 1
  cws:send(handler, msg, opcode)
end

function callbacks.onerror(handler, msg)
  print("Client WebSocket connection is failed for socketfd " .. handler .. ". Error: " .. msg)
end

function callbacks.onclose(handler)
  print("Connection is closed for socketfd " .. handler)
end

local function setting(name, default)
  local value = settings and settings[name]
  if value == nil then return default end
  return value
end

function benchmark.init()
  target = setting("target", "ws://127.0.0.1:5083/echo")
  connections = setting("connections", 100)
  message = string.rep("X", setting("message_size", 1024))
  print("instance id: " .. instance_id)
end

function benchmark.run()
  local sleeper = nap:new()
  sleeper:sleep(1)
  local attempts = 0
  while #sockets < connections and not must_stop() do
    local sock, err = cws:new(target, callbacks)
    if sock then
      sockets[#sockets + 1] = sock
    else
      print(err)
      collectgarbage()
      sleeper:usleep(100000)
    end
    attempts = attempts + 1
    if attempts % 10 == 0 then cws:eventLoop() end
  end
  print("Sockets connected: " .. #sockets)
  local start = time.now()
  received = 0
  while not must_stop() do
    cws:eventLoop()
    local now = time.now()
    if now - start >= 1000 then
      print(received .. " messages received per " .. (now - start) .. "ms")
      received = 0
      start = now
    end
  end
  for _, sock in ipairs(sockets) do
    sock:close()
  end
end

return benchmark
