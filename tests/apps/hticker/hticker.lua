-- hticker: a standalone producer for the recovery tests: sends
-- {cid = 8, message = {i}} on history channel 61 every 2 ms until the
-- server stops, and prints each offset it got back that is a multiple of 100.
hticker = {}

function hticker.init()
  assert(bcast:create(61, { history_size = 100000 }))
end

function hticker.run()
  local sleeper = nap:new()
  local i = 0
  while not must_stop() do
    i = i + 1
    local ok, offset = bcast:send(61, { cid = 8, message = { i } })
    if ok and offset % 100 == 0 then print("hticker::offset " .. offset) end
    sleeper:usleep(2000)
  end
end

return hticker
