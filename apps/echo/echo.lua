-- echo: a raw reactive service that sends every message back as it came,
-- same opcode, same bytes.

echo = {}

function echo.onStart()
  print("echo::onStart")
end

function echo.onMessage(handler, opcode, message)
  local ok, err = ws:send(handler, opcode, message)
  if not ok then
    print("echo::onMessage(): " .. tostring(err))
  end
  return ok
end

function echo.onDisconnect(handler)
end

function echo.onShutdown()
  print("echo::onShutdown()")
end

return echo
