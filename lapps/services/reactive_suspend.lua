-- A reactive instance's blocking calls (sleep, wait), which suspend it: run by reactive.py.
local suspend = ...
return function(seconds) return suspend("sleep", seconds) end,
       function(id) return suspend("wait", id) end
