-- Redis script that acknowledges and deletes mqr entries: run by mqr.py.
local freed = 0
for _, id in ipairs(ARGV) do
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if entry then freed = freed + #entry[2][2] end
end
redis.call('XACK', KEYS[1], 'lapps', unpack(ARGV))
if freed > 0 then redis.call('DECRBY', KEYS[2], freed) end
return redis.call('XDEL', KEYS[1], unpack(ARGV))
