-- ARGV: P, id, name, type, label ('' = none), additional info ('' = none), folded name,
-- transport configuration ('' = none)
local id, name, typ, label, info, fold, transport = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local old = redis.call('HMGET', K('dev', id), 'name', 'type', 'label')
if not old[1] then return 'NOTFOUND' end
local holder = redis.call('HGET', K('dev', 'name'), name)
if holder and holder ~= id then return 'DUPNAME' end
redis.call('HDEL', K('dev', 'name'), old[1])
redis.call('HSET', K('dev', 'name'), name, id)
redis.call('ZREM', K('devs', 'name'), old[1] .. '\0' .. id)
redis.call('ZREM', K('devs', 'type'), old[2] .. '\0' .. id)
redis.call('ZREM', K('devs', 'label'), (old[3] or '') .. '\0' .. id)
redis.call('ZADD', K('devs', 'name'), 0, name .. '\0' .. id)
redis.call('ZADD', K('devs', 'type'), 0, typ .. '\0' .. id)
redis.call('ZADD', K('devs', 'label'), 0, label .. '\0' .. id)
redis.call('HSET', K('dev', id), 'name', name, 'type', typ, 'fold', fold)
if label ~= '' then redis.call('HSET', K('dev', id), 'label', label) else redis.call('HDEL', K('dev', id), 'label') end
if info ~= '' then redis.call('HSET', K('dev', id), 'info', info) else redis.call('HDEL', K('dev', id), 'info') end
if transport ~= '' then redis.call('HSET', K('dev', id), 'transport', transport) else redis.call('HDEL', K('dev', id), 'transport') end
return redis.call('HMGET', K('dev', id), 'id', 'name', 'type', 'label', 'created', 'customer', 'info', 'transport')
