-- ARGV: P, device, scope, keys...
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
local key, gone = K('attr', ARGV[2], ARGV[3]), {}
for i = 4, #ARGV do
  if redis.call('HDEL', key, ARGV[i]) == 1 then gone[#gone + 1] = ARGV[i] end
end
return gone
