-- sealed: a standalone service that reports, once, what its sandbox lets through.
sealed = {}
function sealed.init()
  local ffi_ok = pcall(require, "ffi")
  local _, bytecode = loadstring(string.dump(function() end))
  print("sealed ffi=" .. tostring(ffi_ok) .. " registry=" .. type(debug.getregistry)
        .. " sethook=" .. type(debug.sethook) .. " bytecode=" .. tostring(bytecode)
        .. " jit=" .. tostring(jit.status()))
end
function sealed.run()
  while not must_stop() do nap:new():usleep(20000) end
end
return sealed
