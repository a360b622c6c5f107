-- ARGV: P, id.  0: no such profile; 'DEFAULT': it is the default; 'INUSE': a device's type names it
local id = ARGV[2]
local p = redis.call('HMGET', K('prof', id), 'name', 'key')
if not p[1] then return 0 end
if redis.call('GET', K('prof', 'default')) == id then return 'DEFAULT' end
local name = p[1]
if #redis.call('ZRANGEBYLEX', K('devs', 'type'), '[' .. name .. '\0', '(' .. name .. '\1', 'LIMIT', 0, 1) > 0 then
  return 'INUSE'
end
redis.call('HDEL', K('prof', 'name'), name)
if p[2] then redis.call('HDEL', K('prof', 'key'), p[2]) end
redis.call('ZREM', K('profs'), id)
redis.call('DEL', K('prof', id))
return 1
