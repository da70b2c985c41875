-- The error handler of protected calls; runtime.py puts it before protected_call.lua and dispatcher.lua.
local traceback, tostring = debug.traceback, tostring
local function report(e) return traceback(tostring(e), 2) end
