-- mqr_sender: posts {"message":["Hello World","PAYLOAD..."]} to the queue
-- "testpipe" as fast as its receivers take the messages. When the queue is
-- full, post returns false and "queue full": the sender naps for a
-- millisecond and tries again, rather than spinning.
mqr_sender = {}

local queue

function mqr_sender.init()
  queue = assert(mqr.create("testpipe"))
end

function mqr_sender.run()
  local sleeper = nap:new()
  local message = nljson.decode('{"message":["Hello World","PAYLOAD..."]}')
  local post = queue.post
  while not must_stop() do
    local ok, err = post(queue, message)  -- the message is copied into the queue
    if not ok then
      if err ~= "queue full" then print("mqr_sender: " .. tostring(err)) end
      sleeper:usleep(1000)
    end
  end
end

return mqr_sender
