-- ARGV: P, id, name, type, key ('' = none), secret ('' = none), transport configuration ('' = none)
local id, name, typ, key, secret, transport = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local old = redis.call('HMGET', K('prof', id), 'name', 'key')
if not old[1] then return 'NOTFOUND' end
local holder = redis.call('HGET', K('prof', 'name'), name)
if holder and holder ~= id then return 'DUPNAME' end
if key ~= '' then
  local owner = redis.call('HGET', K('prof', 'key'), key)
  if owner and owner ~= id then return 'DUPKEY' end
end
redis.call('HDEL', K('prof', 'name'), old[1])
redis.call('HSET', K('prof', 'name'), name, id)
if old[2] then redis.call('HDEL', K('prof', 'key'), old[2]) end
redis.call('HSET', K('prof', id), 'name', name, 'type', typ)
if key ~= '' then
  redis.call('HSET', K('prof', id), 'key', key)
  redis.call('HSET', K('prof', 'key'), key, id)
else
  redis.call('HDEL', K('prof', id), 'key')
end
if secret ~= '' then redis.call('HSET', K('prof', id), 'secret', secret) else redis.call('HDEL', K('prof', id), 'secret') end
if transport ~= '' then redis.call('HSET', K('prof', id), 'transport', transport) else redis.call('HDEL', K('prof', id), 'transport') end
if old[1] ~= name then  -- the devices that named it follow (the type index: 'type\0id')
  for _, member in ipairs(redis.call('ZRANGEBYLEX', K('devs', 'type'), '[' .. old[1] .. '\0', '(' .. old[1] .. '\1')) do
    local device = string.sub(member, #old[1] + 2)
    redis.call('HSET', K('dev', device), 'type', name)
    redis.call('ZREM', K('devs', 'type'), member)
    redis.call('ZADD', K('devs', 'type'), 0, name .. '\0' .. device)
  end
end
return redis.call('HMGET', K('prof', id), 'id', 'name', 'type', 'key', 'secret', 'created', 'transport')
