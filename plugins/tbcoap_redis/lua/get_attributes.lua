-- ARGV: P, device, scope, keys... (none: all)
local key = K('attr', ARGV[2], ARGV[3])
if #ARGV == 3 then return redis.call('HGETALL', key) end
local out = {}
for i = 4, #ARGV do
  local v = redis.call('HGET', key, ARGV[i])
  if v then out[#out + 1] = ARGV[i]; out[#out + 1] = v end
end
return out
