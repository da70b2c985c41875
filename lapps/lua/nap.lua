-- The nap global (sleepers that block their caller only): installed by nap.py.
local block = ...
local type, floor = type, math.floor
local Sleeper = {}
Sleeper.__index = Sleeper

local function whole(n) return type(n) == "number" and n >= 0 and n == floor(n) end

local function sleeper(method, unit, scale)
  return function(self, n)
    if getmetatable(self) ~= Sleeper or not whole(n) then
      return "usage: sleeper:" .. method .. "(" .. unit .. "), an unsigned integer"
    end
    block(n / scale)
  end
end

Sleeper.sleep = sleeper("sleep", "seconds", 1)
Sleeper.usleep = sleeper("usleep", "microseconds", 1e6)
Sleeper.nsleep = sleeper("nsleep", "nanoseconds", 1e9)

local nap = {}
function nap:new() return setmetatable({}, Sleeper) end
return nap
