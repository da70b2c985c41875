-- reporter(name): a standalone service module that prints "init <name>" and,
-- once asked to stop, "stop <name>" (first, second and third are made of it).
return function(name)
  local service = {}
  function service.init() print("init " .. name) end
  function service.run()
    local sleeper = nap:new()
    while not must_stop() do sleeper:sleep(60) end
    print("stop " .. name)
  end
  return service
end
