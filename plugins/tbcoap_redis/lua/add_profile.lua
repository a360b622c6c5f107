-- ARGV: P, id, name, type, key ('' = none), secret ('' = none), created, transport configuration ('' = none)
local id, name, typ, key, secret, created, transport = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if redis.call('HEXISTS', K('prof', 'name'), name) == 1 then return 'DUPNAME' end
if key ~= '' and redis.call('HEXISTS', K('prof', 'key'), key) == 1 then return 'DUPKEY' end
redis.call('HSET', K('prof', id), 'id', id, 'name', name, 'type', typ, 'created', created)
if key ~= '' then
  redis.call('HSET', K('prof', id), 'key', key)
  redis.call('HSET', K('prof', 'key'), key, id)
end
if secret ~= '' then redis.call('HSET', K('prof', id), 'secret', secret) end
if transport ~= '' then redis.call('HSET', K('prof', id), 'transport', transport) end
redis.call('HSET', K('prof', 'name'), name, id)
redis.call('ZADD', K('profs'), created, id)
return 'OK'
