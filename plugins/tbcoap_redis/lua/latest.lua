-- ARGV: P, device, keys... (none: all)
if #ARGV == 2 then return redis.call('HGETALL', K('tsl', ARGV[2])) end
local out = {}
for i = 3, #ARGV do
  local v = redis.call('HGET', K('tsl', ARGV[2]), ARGV[i])
  if v then out[#out + 1] = ARGV[i]; out[#out + 1] = v end
end
return out
