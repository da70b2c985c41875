-- pamsolo: a standalone service for the pam_auth tests. run() tries each
-- login of settings.attempts ([service, user, password] each, blocking its
-- thread) and prints "pamsolo <n> <ok> <reason>".
pamsolo = {}

function pamsolo.init() end

function pamsolo.run()
  for i = 1, #settings.attempts do
    local a = settings.attempts[i]
    local ok, reason = pam_auth:login(a[1], a[2], a[3])
    print("pamsolo " .. i .. " " .. tostring(ok) .. " " .. tostring(reason))
  end
end

return pamsolo
