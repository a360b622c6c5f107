-- ARGV: P, device, scope, then (key, 'ts|encoded value') pairs
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
local key = K('attr', ARGV[2], ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
return 'OK'
