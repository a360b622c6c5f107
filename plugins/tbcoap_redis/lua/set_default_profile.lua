-- ARGV: P, id
local p = redis.call('HMGET', K('prof', ARGV[2]), 'id', 'name', 'type', 'key', 'secret', 'created', 'transport')
if not p[1] then return 'NOTFOUND' end
redis.call('SET', K('prof', 'default'), ARGV[2])
return p
