-- Redis script of mqr post (refused when the queue is full): run by mqr.py.
local length = redis.call('XLEN', KEYS[1])
if length >= tonumber(ARGV[1]) then return 0 end
local held = 0
if length > 0 then
  held = tonumber(redis.call('GET', KEYS[2]) or '0')
else
  redis.call('DEL', KEYS[2])
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], 'lapps', '0', 'MKSTREAM')
  end
end
if held + #ARGV[2] > tonumber(ARGV[3]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'v', ARGV[2])
redis.call('INCRBY', KEYS[2], #ARGV[2])
return 1
