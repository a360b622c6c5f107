-- ARGV: P, id, created: a store without a default profile gets one, the profile named 'default'
-- (created if missing); a chosen default stays
if redis.call('EXISTS', K('prof', 'default')) == 1 then return 0 end
local named = redis.call('HGET', K('prof', 'name'), 'default')
if not named then
  named = ARGV[2]
  redis.call('HSET', K('prof', named), 'id', named, 'name', 'default', 'type', 'DISABLED', 'created', ARGV[3])
  redis.call('HSET', K('prof', 'name'), 'default', named)
  redis.call('ZADD', K('profs'), ARGV[3], named)
end
redis.call('SET', K('prof', 'default'), named)
return 1
