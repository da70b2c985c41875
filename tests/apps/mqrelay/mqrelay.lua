-- mqrelay: a standalone instance blocked in recv on "relay.in" that posts
-- every value it gets to "relay.out" unchanged.
mqrelay = {}

function mqrelay.init() end

function mqrelay.run()
  local inbox, outbox = mqr.create("relay.in"), mqr.create("relay.out")
  local relayed = 0
  while not must_stop() do
    local value, err = inbox:recv()
    if value ~= nil then
      assert(outbox:post(value))
      relayed = relayed + 1
    else
      print("mqrelay recv gave nil: " .. tostring(err))
    end
  end
  print("mqrelay stopped " .. instance_id .. " after " .. relayed)
end

return mqrelay
