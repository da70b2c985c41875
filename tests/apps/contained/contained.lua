-- contained: a raw service for the containment tests. "CMD ARG" runs a
-- command and sends back what it returns; anything else is echoed. Commands
-- run away in every way a handler can, keep or exhaust memory, and try the
-- ways out of Lua.
contained = {}

local kept = {}
local spin_at_disconnect = {}
local spin_at_shutdown = false

local function spin() while true do end end

-- made when the module loads, long before the step that resumes it: the
-- watchdog's hook reaches it only if hooks are global to the Lua state
local early = coroutine.create(function() pcall(spin) end)

local function outcome(ok, err)
  if ok then return "ok" end
  return tostring(err):gsub("^[^:]*:%d+: ", "")  -- without the position
end

local commands = {}

function commands.loop() spin() end

function commands.pcall_loop()
  while true do pcall(spin) end
end

-- every stop caught, then carry on as if nothing had happened
function commands.swallow()
  pcall(spin)
  xpcall(spin, function(e) return e end)
  return "survived"
end

function commands.coroutine()
  local co = coroutine.create(function()
    local inner = coroutine.wrap(function() pcall(spin) end)
    pcall(inner)
  end)
  coroutine.resume(co)
  return "survived"
end

function commands.early_coroutine()
  coroutine.resume(early)
  return "survived"
end

-- code loaded at run time, and lapps's own (compiled) loops around or
-- inside the service's
function commands.loaded_loop()
  load("while true do end")()
end

function commands.around_lapps_loop()
  local array = nljson.decode("[1, 2, 3]")
  while true do nljson.foreach(array, function() end) end
end

function commands.inside_lapps_loop()
  nljson.foreach(nljson.decode("[1, 2, 3]"), spin)
end

function commands.spin_at_disconnect(_, handler)
  spin_at_disconnect[handler] = true
  return "armed"
end

function commands.spin_at_shutdown()
  spin_at_shutdown = true
  return "armed"
end

-- work, sleep longer than the budget, work again: each run is short
function commands.rest(arg)
  for _ = 1, 100000 do end
  nap:new():usleep(tonumber(arg))
  for _ = 1, 100000 do end
  return "rested"
end

function commands.jit_on()
  return outcome(pcall(jit.on))
end

function commands.keep(arg)
  kept[#kept + 1] = arg
  return "kept " .. #kept
end

function commands.grow()
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end
end

-- the ways out of Lua, each as "name=outcome"
function commands.escape()
  local report = {}
  local function try(name, ok, err) report[#report + 1] = name .. "=" .. outcome(ok, err) end
  report[#report + 1] = "python=" .. type(python)
  for _, name in ipairs({ "python", "ffi", "string.buffer", "jit.util", "jit.profile" }) do
    try("require(" .. name .. ")", pcall(require, name))
  end
  report[#report + 1] = "loadlib=" .. type(package.loadlib)
  report[#report + 1] = "searchers=" .. #package.loaders
  local names = {}
  for name in pairs(debug) do names[#names + 1] = name end
  table.sort(names)
  report[#report + 1] = "debug=" .. table.concat(names, ",")
  report[#report + 1] = "getmetatable(ws.send)=" .. type(getmetatable(ws.send))
  try("dump(ws.send)", load(string.dump(ws.send)))
  return table.concat(report, "\30")  -- ASCII RS: the messages have spaces and newlines
end

-- bytecode through every loader; settings.dir holds precompiled.lua
-- (string.dump output) and textual.lua
function commands.bytecode()
  local dir = settings.dir
  package.path = dir .. "/?.lua;" .. package.path
  local dumped = string.dump(function() return "from bytecode" end)
  local report = {}
  local function try(name, ok, err) report[#report + 1] = name .. "=" .. outcome(ok, err) end
  try("load", load(dumped))
  try("load_reader", load(function() local s = dumped; dumped = nil; return s end))
  dumped = string.dump(function() return "from bytecode" end)
  try("loadstring", loadstring(dumped))
  try("loadfile", loadfile(dir .. "/precompiled.lua"))
  try("dofile", pcall(dofile, dir .. "/precompiled.lua"))
  try("require", pcall(require, "precompiled"))
  report[#report + 1] = "text=" .. load("return 'from text'")() .. "," .. loadstring("return 2")()
    .. "," .. loadfile(dir .. "/textual.lua")() .. "," .. dofile(dir .. "/textual.lua")
    .. "," .. require("textual")
  return table.concat(report, "\n")
end

function contained.onStart()
  print("contained::onStart")
end

function contained.onMessage(handler, opcode, message)
  local cmd, arg = message:match("^(%S+)%s*(.*)$")
  local command = commands[cmd]
  return ws:send(handler, 1, command and command(arg, handler) or message)
end

function contained.onDisconnect(handler)
  print("contained::onDisconnect " .. handler)
  if spin_at_disconnect[handler] then spin() end
end

function contained.onShutdown()
  if spin_at_shutdown then spin() end
end

return contained
