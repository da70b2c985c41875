-- broken: a reactive module without onDisconnect.
broken = {}
function broken.onStart() end
function broken.onMessage(handler, opcode, message) return true end
function broken.onShutdown() end
return broken
