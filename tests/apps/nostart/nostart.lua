-- nostart: onStart fails, so the service has no running instance.
nostart = {}
function nostart.onStart() error("cannot start") end
function nostart.onMessage(handler, opcode, message) return true end
function nostart.onDisconnect(handler) end
function nostart.onShutdown() end
return nostart
