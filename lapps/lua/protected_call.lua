-- After report.lua: an xpcall wrapper of module[name], made by protected() in runtime.py.
local module, name = ...
local xpcall = xpcall
return function(...) return xpcall(module[name], report, ...) end
