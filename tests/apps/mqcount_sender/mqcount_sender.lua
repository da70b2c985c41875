-- mqcount_sender: posts {n = 1} .. {n = count} (settings.count) to the queue
-- settings.queue, then one {done = true} per receiver (settings.receivers);
-- with settings.release, only once something is posted to that queue.
-- A full queue makes it nap for a millisecond and retry the same message.
mqcount_sender = {}

local queue

function mqcount_sender.init()
  queue = assert(mqr.create(settings.queue))
end

local function post(sleeper, value)
  local full = 0
  while true do
    local ok, err = queue:post(value)
    if ok then return full end
    if err ~= "queue full" then error("post failed: " .. tostring(err)) end
    full = full + 1
    sleeper:usleep(1000)
  end
end

function mqcount_sender.run()
  local sleeper = nap:new()
  local count, full = settings.count, 0
  for n = 1, count do
    full = full + post(sleeper, { n = n })
  end
  if settings.release then
    assert(mqr.create(settings.release):recv())
  end
  for _ = 1, settings.receivers do
    post(sleeper, { done = true })
  end
  print("mqcount sent " .. count .. " full=" .. full)
  while not must_stop() do sleeper:sleep(3600) end
end

return mqcount_sender
