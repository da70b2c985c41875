-- The cws global (WebSocket client; callbacks run in cws:eventLoop()): installed by cws.py.
local start, wait, next_event, send, close = ...
local type, pcall, tostring, setmetatable = type, pcall, tostring, setmetatable
local stderr = io.stderr
local callbacks = {}
local Sock = {}
Sock.__index = Sock

function Sock:close()
  if self.handler then
    callbacks[self.handler] = nil
    close(self.handler)
    self.handler = nil
  end
end
Sock.__gc = Sock.close

local cws = {}

function cws:new(uri, handlers)
  if type(uri) ~= "string" or (handlers ~= nil and type(handlers) ~= "table") then
    return nil, "usage: cws:new(uri, {onopen=, onmessage=, onerror=, onclose=})"
  end
  local id, err = start(uri)
  if not id then return nil, err end
  callbacks[id] = handlers or {}
  local ok, reason = wait(id)
  if not ok then
    callbacks[id] = nil
    return nil, reason
  end
  return setmetatable({ handler = id }, Sock)
end

function cws:send(handler, data, opcode)
  if type(handler) ~= "number" or type(data) ~= "string" or (opcode ~= 1 and opcode ~= 2) then
    return false, "usage: cws:send(handler, data, opcode), opcode 1 (text) or 2 (binary)"
  end
  return send(handler, data, opcode)
end

local function dispatch(kind, handler, a, b)
  local handlers = callbacks[handler]
  if handlers == nil then return end
  if kind == "error" or kind == "close" then callbacks[handler] = nil end
  local fn = handlers["on" .. kind]
  if fn == nil then return end
  local ok, err
  if kind == "open" then ok, err = pcall(fn, handler)
  elseif kind == "message" then ok, err = pcall(fn, handler, a, b)
  elseif kind == "close" and a == nil then ok, err = pcall(fn, handler)
  else ok, err = pcall(fn, handler, a) end
  if not ok then stderr:write("cws: error in on" .. kind .. ": " .. tostring(err) .. "\n") end
end

function cws:eventLoop()
  local kind, handler, a, b = next_event(true)
  while kind do
    dispatch(kind, handler, a, b)
    kind, handler, a, b = next_event(false)
  end
end

return cws
