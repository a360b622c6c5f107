-- ARGV: P, what ('id': the profile with id ARGV[3]; 'default': the default profile)
local id = ARGV[3]
if ARGV[2] == 'default' then id = redis.call('GET', K('prof', 'default')) end
if not id then return NIL end
local p = redis.call('HMGET', K('prof', id), 'id', 'name', 'type', 'key', 'secret', 'created', 'transport')
if not p[1] then return NIL end
return p
