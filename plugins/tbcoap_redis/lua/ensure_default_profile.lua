-- ARGV: P, id, created: the 'default' profile, made once
if redis.call('HEXISTS', K('prof', 'name'), 'default') == 1 then return 0 end
redis.call('HSET', K('prof', ARGV[2]), 'id', ARGV[2], 'name', 'default', 'type', 'DISABLED', 'created', ARGV[3])
redis.call('HSET', K('prof', 'name'), 'default', ARGV[2])
redis.call('ZADD', K('profs'), ARGV[3], ARGV[2])
return 1
