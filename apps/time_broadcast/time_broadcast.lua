-- time_broadcast: pushes the server time to bcast channel 1000 (cid 5) once
-- a second, until the server stops.
time_broadcast = {}

function time_broadcast.init()
  bcast:create(1000)
end

function time_broadcast.run()
  local sleeper = nap:new()
  local msg = nljson.decode('{"cid":5,"message":[]}')
  while not must_stop() do
    msg.message = { "Server time: " .. os.date("%c") }
    bcast:send(1000, msg)
    sleeper:sleep(1)
  end
end

return time_broadcast
