-- busproducer: a standalone producer for the bus tests. init creates the
-- bcast channel settings.channel; run waits for one value on the mqr queue
-- settings.go, then sends settings.count messages {cid = 7, message = {i,
-- settings.text}} on the channel, retrying a send the bus refuses.
busproducer = {}

function busproducer.init()
  assert(bcast:create(settings.channel))
  print("busproducer created " .. settings.channel)
end

function busproducer.run()
  local go = mqr.create(settings.go)
  local value, err = go:recv()
  if value == nil then print("busproducer stopped before go: " .. tostring(err)) return end
  local sleeper, refused = nap:new(), 0
  for i = 1, settings.count do
    local message = { cid = 7, message = { i, settings.text } }
    while true do
      local ok, why = bcast:send(settings.channel, message)
      if ok then break end
      refused = refused + 1
      if refused == 1 then print("busproducer send refused: " .. tostring(why)) end
      sleeper:usleep(1000)
    end
  end
  print("busproducer sent " .. settings.count .. " refused=" .. refused)
  while not must_stop() do sleeper:sleep(3600) end
end

return busproducer
