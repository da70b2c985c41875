-- spinstart: onStart never returns, so the service has no running instance.
spinstart = {}
function spinstart.onStart() while true do end end
function spinstart.onMessage(handler, opcode, message) return true end
function spinstart.onDisconnect(handler) end
function spinstart.onShutdown() end
return spinstart
