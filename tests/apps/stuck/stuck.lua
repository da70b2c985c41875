-- stuck: a standalone service that never looks at must_stop().
stuck = {}
function stuck.init() print("stuck init") end
function stuck.run()
  local sleeper = nap:new()
  while true do sleeper:usleep(20000) end
end
return stuck
