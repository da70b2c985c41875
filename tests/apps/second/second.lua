-- second: a standalone service that reports when it starts and stops.
second = {}
function second.init() print("init second") end
function second.run()
  local sleeper = nap:new()
  while not must_stop() do sleeper:sleep(60) end
  print("stop second")
end
return second
