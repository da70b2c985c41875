-- pamprobe: a LAppS-protocol service for the pam_auth tests.
-- login(service, user, password) answers [ok] or [ok, reason];
-- usage() answers what pam_auth:login says to wrong calls, as [ok, reason] pairs.
pamprobe = {}

local function result(handler, values)
  return ws:send(handler, { cid = 0, status = 1, result = values })
end

local methods = {}

function methods.login(handler, message)
  local p = message.params
  print("pamprobe::login " .. handler)
  local ok, reason = pam_auth:login(p[1], p[2], p[3])
  return result(handler, { ok, reason })
end

function methods.usage(handler, message)
  local answers = {}
  local function try(...)
    local ok, reason = ...
    answers[#answers + 1] = { ok, reason }
  end
  try(pam_auth:login())
  try(pam_auth:login("lapps", "someone"))
  try(pam_auth:login("", "someone", "secret"))
  try(pam_auth:login("lapps", "", "secret"))
  try(pam_auth:login("lapps", "someone", ""))
  try(pam_auth:login("lapps", 42, "secret"))
  try(pam_auth:login("lapps", "someone", { "secret" }))
  try(pam_auth.login("lapps", "someone", "secret"))
  try(pam_auth:login("lapps", "some\0one", "secret"))
  return result(handler, answers)
end

function pamprobe.onStart() end

function pamprobe.onMessage(handler, msg_type, message)
  return methods[message.method](handler, message)
end

function pamprobe.onDisconnect(handler) end

function pamprobe.onShutdown() end

return pamprobe
