-- third: a standalone service that reports when it starts and stops.
third = {}
function third.init() print("init third") end
function third.run()
  local sleeper = nap:new()
  while not must_stop() do sleeper:sleep(60) end
  print("stop third")
end
return third
