-- bcast history on Redis, one channel's: run by history.py (which says why
-- it is laid out so). KEYS: the channel's meta hash, its stream, the hash of
-- every history channel's options. ARGV: the action ('create', 'publish' or
-- 'read'), the channel id, the epoch to give a channel that has none, then
--   create:  the options ("SIZE TTL");
--   publish: the payload, the process's history_max_bytes, the options it
--            knows of (if Redis lost them), the pub/sub channel;
--   read:    the offset to read after, the most entries to return.
local meta, stream, histories = KEYS[1], KEYS[2], KEYS[3]
local action, id = ARGV[1], ARGV[2]

if action == 'create' then
  redis.call('HSET', histories, id, ARGV[4])
elseif action == 'publish' then
  redis.call('HSETNX', histories, id, ARGV[6])
end
local options = redis.call('HGET', histories, id)
if not options then return redis.error_reply('NOHISTORY the channel keeps no history') end
local size, ttl = string.match(options, '^(%d+) ?(.*)$')
size, ttl = tonumber(size), tonumber(ttl)  -- ttl is nil for no age limit

-- (A new epoch starts a new stream; an expired stream held no bytes.)
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'bytes', 0)
elseif redis.call('EXISTS', stream) == 0 then
  redis.call('HSET', meta, 'bytes', 0)
end
if action == 'create' then return 1 end

local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)

-- Drop the oldest entries while over the size, the bytes or the age.
local function trim(max_bytes)
  local oldest = ttl and now - ttl * 1000
  while true do
    local entry = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if not entry then return end
    local fields = entry[2]  -- p, payload, t, time
    if redis.call('XLEN', stream) <= size
        and tonumber(redis.call('HGET', meta, 'bytes')) <= max_bytes
        and not (oldest and tonumber(fields[4]) < oldest) then
      return
    end
    redis.call('XDEL', stream, entry[1])
    redis.call('HINCRBY', meta, 'bytes', -#fields[2])
  end
end

local function offset_of(entry_id) return tonumber(string.match(entry_id, '%-(%d+)$')) end

if action == 'read' then
  trim(math.huge)
  local top = tonumber(redis.call('HGET', meta, 'offset'))
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local entries = {}
  local after = string.format('0-%d', tonumber(ARGV[4]) + 1)
  for _, entry in ipairs(redis.call('XRANGE', stream, after, '+', 'COUNT', ARGV[5])) do
    entries[#entries + 1] = offset_of(entry[1])
    entries[#entries + 1] = entry[2][2]
  end
  return { epoch, top, oldest and offset_of(oldest[1]) or top + 1, entries }
end

-- The CBOR head of major type `major` with the argument n.
local function head(major, n)
  if n < 24 then return string.char(major * 32 + n) end
  local width, info = 1, 24
  while n >= 256 ^ width do width, info = width * 2, info + 1 end
  local bytes = {}
  for i = width, 1, -1 do
    bytes[i] = n % 256
    n = math.floor(n / 256)
  end
  return string.char(major * 32 + info, unpack(bytes))
end

-- The broadcast's CBOR map with epoch and offset put first (as
-- lapps.bus.history.positioned does).
local function positioned(payload, offset)
  local first = string.byte(payload, 1)
  if not first or math.floor(first / 32) ~= 5 or first % 32 > 27 then
    return nil
  end
  local info, count, body = first % 32, first % 32, 2
  if info >= 24 then
    local width = 2 ^ (info - 24)
    count = 0
    for i = 2, 1 + width do count = count * 256 + string.byte(payload, i) end
    body = 2 + width
  end
  return head(5, count + 2) .. '\101epoch' .. head(3, #epoch) .. epoch
    .. '\102offset' .. head(0, offset) .. string.sub(payload, body)
end

local offset = redis.call('HINCRBY', meta, 'offset', 1)
local framed = positioned(ARGV[4], offset)
if not framed then
  redis.call('HINCRBY', meta, 'offset', -1)
  return redis.error_reply('ERR a broadcast payload is a CBOR map')
end
redis.call('XADD', stream, string.format('0-%d', offset), 'p', framed, 't',
           string.format('%d', now))
redis.call('HINCRBY', meta, 'bytes', #framed)
trim(tonumber(ARGV[5]))
if ttl then redis.call('PEXPIRE', stream, math.ceil(ttl * 1000)) end
redis.call('PUBLISH', ARGV[7], framed)
return offset
