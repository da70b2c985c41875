-- The pam_auth global (pam_auth:login): installed by pam_auth.py.
local start, wait, usage = ...
local type, find = type, string.find
local pam_auth = {}

local function text(s) return type(s) == "string" and s ~= "" end

function pam_auth:login(service, username, password)
  if self ~= pam_auth or not (text(service) and text(username) and text(password)) then
    return false, usage
  end
  if find(service, "\0", 1, true) or find(username, "\0", 1, true)
      or find(password, "\0", 1, true) then
    return false, usage .. " without NUL bytes"
  end
  local id, ok, reason = start(service, username, password)
  if id then return wait(id) end
  return ok, reason
end

return pam_auth
