-- busrecorder: takes {n = ...} messages from the mqr queue settings.queue
-- until a {done = true}, appending each n to its own file (settings.out ..
-- instance_id) and flushing it before the next recv, so the file holds what
-- this receiver got even if its process is killed. Prints "busrecorder mark"
-- after settings.mark messages, and "busrecorder done" with its count.
busrecorder = {}

-- the process it runs in (a worker, with several): /proc/self/stat starts with its id
local function pid() return io.lines("/proc/self/stat")():match("^%d+") end

local queue, file

function busrecorder.init()
  queue = assert(mqr.create(settings.queue))
  file = assert(io.open(settings.out .. instance_id, "w"))
end

function busrecorder.run()
  local got = 0
  while true do
    local message, err = queue:recv()
    if message == nil then print("busrecorder stopped early: " .. tostring(err)) return end
    if message.done then break end
    file:write(message.n, "\n")
    file:flush()
    got = got + 1
    if got == settings.mark then print("busrecorder mark " .. instance_id .. " pid=" .. pid()) end
  end
  file:close()
  print("busrecorder done " .. instance_id .. " count=" .. got)
  local sleeper = nap:new()
  while not must_stop() do sleeper:sleep(3600) end
end

return busrecorder
