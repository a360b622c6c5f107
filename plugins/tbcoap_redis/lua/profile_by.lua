-- ARGV: P, index ('name' or 'key'), value
local id = redis.call('HGET', K('prof', ARGV[2]), ARGV[3])
if not id then return NIL end
return redis.call('HMGET', K('prof', id), 'id', 'name', 'type', 'key', 'secret', 'created', 'transport')
