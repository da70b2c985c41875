-- mqcount_receiver: takes {n = ...} messages from settings.queue until a
-- {done = true}, keeping a bitmap of the numbers 1..settings.count it got,
-- then prints its count, duplicates, out-of-range numbers, whether its
-- numbers came in increasing order (FIFO), and the bitmap in hex.
mqcount_receiver = {}

-- the process it runs in (a worker, with several): /proc/self/stat starts with its id
local function pid() return io.lines("/proc/self/stat")():match("^%d+") end

local bit = require("bit")
local band, bor, lshift, tohex = bit.band, bit.bor, bit.lshift, bit.tohex
local floor = math.floor
local queue

function mqcount_receiver.init()
  queue = assert(mqr.create(settings.queue))
end

function mqcount_receiver.run()
  local count = settings.count
  local words = {}
  for i = 1, floor((count + 31) / 32) do words[i] = 0 end
  local got, dups, bad, ordered, last = 0, 0, 0, true, 0
  while true do
    local message, err = queue:recv()
    if message == nil then print("mqcount receiver stopped early: " .. tostring(err)) return end
    if message.done then break end
    local n = message.n
    got = got + 1
    if type(n) ~= "number" or n < 1 or n > count or n ~= floor(n) then
      bad = bad + 1
    else
      if n <= last then ordered = false end
      last = n
      local w, b = floor((n - 1) / 32) + 1, lshift(1, (n - 1) % 32)
      if band(words[w], b) ~= 0 then dups = dups + 1 else words[w] = bor(words[w], b) end
    end
  end
  local hex = {}
  for i = 1, #words do hex[i] = tohex(words[i], 8) end
  print("mqcount got " .. instance_id .. " count=" .. got .. " dups=" .. dups .. " bad=" .. bad
        .. " ordered=" .. tostring(ordered) .. " bits=" .. table.concat(hex)
        .. " pid=" .. pid())
  local sleeper = nap:new()  -- not recv: the other receiver's done is still queued
  while not must_stop() do sleeper:sleep(3600) end
end

return mqcount_receiver
