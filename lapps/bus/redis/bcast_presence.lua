-- bcast presence on Redis, one channel's: run by history.py. KEYS[1]: the
-- channel's set of consumers. ARGV: the prefix of the presence keys of
-- consumers (alive:), of their subscriptions on this channel
-- (presence:ID:), and the most members to list. A consumer that is no
-- longer alive, or has no subscription left, leaves the set.
local alive, subscriptions, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local count, members = 0, {}
for _, consumer in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local hash = subscriptions .. consumer
  if redis.call('EXISTS', alive .. consumer) == 0 or redis.call('EXISTS', hash) == 0 then
    redis.call('DEL', hash)
    redis.call('SREM', KEYS[1], consumer)
  else
    count = count + redis.call('HLEN', hash)
    if #members < most then
      for _, info in ipairs(redis.call('HVALS', hash)) do
        if info ~= '' and #members < most then members[#members + 1] = info end
      end
    end
  end
end
return { count, members }
