-- cwsmany: LAppS's benchmark as spec §7.2 describes it (800 sockets, one
-- cws:eventLoop() every 10 creations, then a closed echo loop with a rate
-- line a second), and a report once every socket has opened: how many, and
-- whether each onopen ran inside cws:eventLoop(). settings.max_connections
-- and settings.target replace the defaults; settings.ca is not needed (the
-- server's tls_certificates.ca verifies).
cwsmany = {}

local max_connections = 800
local target = "wss://127.0.0.1:5083/echo"
local message = string.rep("X", 64)
local sockets = {}
local inside = false
local opened, outside, failed = 0, 0, 0
local received, started = 0, 0

local function report(fmt, ...) print(string.format(fmt, ...)) end

-- LAppS's callbacks, plus the counts the test reads
local callbacks = {
  onopen = function(h)
    opened, outside = opened + 1, outside + (inside and 0 or 1)
    local ok, err = cws:send(h, message, 2)
    if not ok then report("Error on websocket send at handler %d: %s", h, tostring(err)) end
  end,
  onmessage = function(h, msg, opcode)
    received = received + 1
    cws:send(h, msg, opcode)
  end,
  onerror = function(h, msg)
    failed = failed + 1
    report("Client WebSocket connection is failed for socketfd %d. Error: %s", h, msg)
  end,
  onclose = function(h) report("Connection is closed for socketfd %d", h) end,
}

local function poll()
  inside = true
  cws:eventLoop()
  inside = false
end

function cwsmany.init()
  max_connections = settings and settings.max_connections or max_connections
  target = settings and settings.target or target
  print("instance id: " .. instance_id)
end

-- spec §7.2 step 2: a socket per attempt, one poll every 10 attempts
local function connect_all()
  for attempt = 1, math.huge do
    if #sockets >= max_connections or must_stop() then return end
    local sock, err = cws:new(target, callbacks)
    if sock then sockets[#sockets + 1] = sock else print(err); collectgarbage() end
    if attempt % 10 == 0 then poll() end
  end
end

function cwsmany.run()
  nap:new():sleep(1)
  local began = time.now()
  connect_all()
  print("Sockets connected: " .. #sockets)
  started = time.now()
  local reported = false
  while not must_stop() do
    poll()
    if not reported and opened + failed == #sockets then
      print("cwsmany: open " .. opened .. " failed " .. failed .. " outside eventLoop " .. outside)
      print("cwsmany: all settled " .. (time.now() - began) .. " ms after the first cws:new")
      reported = true
    end
    local now = time.now()
    if now - started >= 1000 then
      print(received .. " messages receved per " .. (now - started) .. "ms")
      received, started = 0, now
    end
  end
  for _, sock in ipairs(sockets) do
    sock:close()
    cws:eventLoop()
  end
end

return cwsmany
