-- broadcast_blob: every 5 s pushes a multi-KiB message to bcast channel 2000
-- (cid 6), to exercise large and fragmented broadcasts.
broadcast_blob = {}

local blob

function broadcast_blob.init()
  bcast:create(2000)
  local rows = {}
  for row = 1, 64 do
    local line = {}
    for col = 1, 72 do
      line[col] = ((row * col) % 7 == 0) and "#" or ((row + col) % 5 == 0 and "*" or ".")
    end
    rows[row] = table.concat(line)
  end
  blob = table.concat(rows, "\n")
end

function broadcast_blob.run()
  local sleeper = nap:new()
  local msg = nljson.decode('{"cid":6,"message":[1,2,3,4,5]}')
  msg.message[6] = blob
  local waited = 5
  while not must_stop() do
    if waited >= 5 then
      bcast:send(2000, msg)
      waited = 0
    end
    sleeper:usleep(100000)
    waited = waited + 0.1
  end
end

return broadcast_blob
