-- first: a standalone service that reports when it starts and stops.
first = {}
function first.init() print("init first") end
function first.run()
  local sleeper = nap:new()
  while not must_stop() do sleeper:sleep(60) end
  print("stop first")
end
return first
