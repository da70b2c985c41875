-- spinner: a standalone service stuck in Lua for good. The loop is compiled
-- by the JIT, so nothing can interrupt it: not must_stop(), not a hook.
spinner = {}
function spinner.init() end
function spinner.run()
  print("spinner spinning")
  while true do end
end
return spinner
