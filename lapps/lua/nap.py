"""``nap``: sleepers that block their caller, never the reactor.

In a standalone instance a sleep blocks the instance's thread (and ends early
when the server stops); in a reactive instance it suspends the instance's
coroutine while the reactor goes on, and its later events wait in order."""

_NAP = b"""
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
"""


def install(context):
    context.runtime.globals()[b"nap"] = context.runtime.execute(_NAP, context.block)
