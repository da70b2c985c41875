-- The seal of a runtime before service code runs (chunk =lapps.sandbox): load_module() in runtime.py.
local interpreted = ...
package.loaded.ffi, package.loadlib = nil, nil
local preload, loaders = package.preload, package.loaders
for _, name in ipairs({ "ffi", "string.buffer", "jit.util", "jit.profile" }) do
  preload[name] = nil
end
loaders[3], loaders[4] = nil, nil  -- the C module searchers
debug = { traceback = debug.traceback, getinfo = debug.getinfo, getlocal = debug.getlocal }
package.loaded.debug = debug

local load_, loadfile_, searchpath, jit_off = load, loadfile, package.searchpath, jit.off
local error, format = error, string.format
local function service_chunk(chunk, err)  -- what every loader returns
  if err == "attempt to load chunk with wrong mode" then
    err = "bytecode is not allowed: lapps loads Lua source only"
  elseif interpreted and chunk ~= nil then
    jit_off(chunk, true)  -- and every function defined in it
  end
  return chunk, err
end
function load(chunk, name, mode, ...) return service_chunk(load_(chunk, name, "t", ...)) end
loadstring = load
function loadfile(file, mode, ...) return service_chunk(loadfile_(file, "t", ...)) end
function dofile(file)
  local chunk, err = loadfile(file)
  if chunk == nil then error(err, 0) end
  return chunk()
end
loaders[2] = function(name)  -- LuaJIT's own loads bytecode files too
  local file, missing = searchpath(name, package.path)
  if file == nil then return missing end
  local chunk, err = loadfile(file)
  if chunk == nil then
    error(format("error loading module '%s' from file '%s':\n\t%s", name, file, err), 0)
  end
  return chunk
end
