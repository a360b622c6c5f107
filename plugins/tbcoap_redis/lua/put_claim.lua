-- ARGV: P, device, secret, expires, now
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
local current = redis.call('HGET', K('claim', ARGV[2]), 'expires')
if current and tonumber(current) > tonumber(ARGV[5]) then return 0 end
redis.call('HSET', K('claim', ARGV[2]), 'secret', ARGV[3], 'expires', ARGV[4])
return 1
