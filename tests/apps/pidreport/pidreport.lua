-- pidreport: a raw reactive service for the worker tests; answers any
-- message with the id of the process it runs in (Lua has no getpid: the
-- first field of /proc/self/stat is the pid). "stall in C" first runs a
-- pattern match that does not end in practice: Lua stuck inside a C function,
-- where handler_timeout's hook cannot stop it (the watchdog tests).
pidreport = {}

local pid

function pidreport.onStart()
  local stat = assert(io.open("/proc/self/stat", "r"))
  pid = stat:read("*l"):match("^(%d+)")
  stat:close()
end

function pidreport.onMessage(handler, opcode, message)
  if message == "stall in C" then
    string.find(string.rep("a", 5000), ".-.-.-.-.-.-.-b")
  end
  return ws:send(handler, 1, pid)
end

function pidreport.onDisconnect(handler)
end

function pidreport.onShutdown()
end

return pidreport
