-- pidreport: a raw reactive service for the worker tests; answers any
-- message with the id of the process it runs in (Lua has no getpid: the
-- first field of /proc/self/stat is the pid).
pidreport = {}

local pid

function pidreport.onStart()
  local stat = assert(io.open("/proc/self/stat", "r"))
  pid = stat:read("*l"):match("^(%d+)")
  stat:close()
end

function pidreport.onMessage(handler, opcode, message)
  return ws:send(handler, 1, pid)
end

function pidreport.onDisconnect(handler)
end

function pidreport.onShutdown()
end

return pidreport
