-- ticker: a standalone service for tests; reports its globals, then sleeps
-- in short naps until asked to stop.
ticker = {}

function ticker.init()
  print("ticker init " .. type(instance_id) .. " " .. instance_id .. " ws=" .. type(ws)
        .. " bcast=" .. type(bcast) .. " nap=" .. type(nap) .. " time=" .. type(time))
end

function ticker.run()
  local sleeper = nap:new()
  local naps = 0
  while not must_stop() do
    sleeper:sleep(3600)  -- ends when the server stops
    naps = naps + 1
  end
  print("ticker stopped " .. instance_id .. " after " .. naps .. " nap")
end

return ticker
