-- mqr_receiver: takes messages from the queue "testpipe" (its instances
-- compete: each message reaches one of them) and prints how many it got
-- about once a second.
mqr_receiver = {}

local queue

function mqr_receiver.init()
  queue = assert(mqr.create("testpipe"))
end

function mqr_receiver.run()
  local now = time.now
  local count, start = 0, now()
  while not must_stop() do
    if queue:recv() ~= nil then  -- waits; nil once the server stops
      count = count + 1
    end
    local elapsed = now() - start
    if elapsed >= 1000 then
      print("Received " .. count .. " messages per " .. elapsed .. "ms")
      count, start = 0, start + elapsed
    end
  end
  print("must stop[" .. instance_id .. "]")
end

return mqr_receiver
