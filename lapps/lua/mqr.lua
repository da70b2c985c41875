-- The mqr global (named message queues): installed by mqr.py.
local create, post_json, post_plain, try_recv, recv, wait, give_up, settle = ...
local type, getmetatable, setmetatable = type, getmetatable, setmetatable

local CREATE = "usage: mqr.create(name), a non-empty string"
local POST = "usage: queue:post(value), an nljson value, a table, a string, a number or a boolean"
local RECV = "usage: queue:recv() on a queue from mqr.create"
local TRY_RECV = "usage: queue:try_recv() on a queue from mqr.create"

local Queue = {}
Queue.__index = Queue

function Queue:post(value)
  if getmetatable(self) ~= Queue then return false, POST end
  local t = type(value)
  if t == "table" or t == "userdata" then return settle(false, post_json(self.name, value)) end
  if t == "string" or t == "number" or t == "boolean" then
    return settle(false, post_plain(self.name, value))
  end
  return false, POST
end

function Queue:try_recv()
  if getmetatable(self) ~= Queue then return nil, TRY_RECV end
  local value, err, key = try_recv(self.name)
  if key == nil then return value, err end
  local fetched, problem = settle(nil, false, nil, key)  -- Redis was asked what is queued
  if not fetched then return nil, problem end
  return try_recv(self.name, true)
end

if wait == nil then  -- standalone: recv blocks the instance's thread
  function Queue:recv()
    if getmetatable(self) ~= Queue then return nil, RECV end
    return recv(self.name)
  end
else                 -- reactive: recv suspends the instance's coroutine
  function Queue:recv()
    if getmetatable(self) ~= Queue then return nil, RECV end
    local value, err, key = recv(self.name)
    if key == nil then return value, err end
    local called, ok, got, err = pcall(wait, key)
    if not called then  -- it cannot suspend here: the recv waits for nothing
      give_up(key)
      error(ok, 0)
    end
    if ok then return got, err end
    return give_up(key)
  end
end

Queue.__tostring = function(self) return "mqr queue " .. self.name end

local mqr = {}
function mqr.create(name)
  if type(name) ~= "string" or name == "" then return nil, CREATE end
  create(name)
  return setmetatable({ name = name }, Queue)
end
return mqr
