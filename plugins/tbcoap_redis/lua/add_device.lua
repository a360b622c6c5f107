-- ARGV: P, id, name, type, label ('' = none), created, customer ('' = none), token, folded name, info ('' = none),
-- transport configuration ('' = none)
local id, name, typ, label, created, customer, token, fold = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local info = ARGV[10]
if redis.call('HEXISTS', K('dev', 'name'), name) == 1 then return 'DUPNAME' end
if redis.call('HEXISTS', K('token'), token) == 1 then return 'DUPTOKEN' end
if redis.call('EXISTS', K('dev', id)) == 1 then return 'DUPID' end
redis.call('HSET', K('dev', id), 'id', id, 'name', name, 'type', typ, 'created', created, 'token', token, 'fold', fold)
if label ~= '' then redis.call('HSET', K('dev', id), 'label', label) end
if info ~= '' then redis.call('HSET', K('dev', id), 'info', info) end
if ARGV[11] and ARGV[11] ~= '' then redis.call('HSET', K('dev', id), 'transport', ARGV[11]) end
if customer ~= '' then
  redis.call('HSET', K('dev', id), 'customer', customer)
  redis.call('ZADD', K('cust', customer, 'devs'), created, id)
end
redis.call('HSET', K('dev', 'name'), name, id)
redis.call('HSET', K('token'), token, id)
redis.call('ZADD', K('devs', 'createdTime'), created, id)
redis.call('ZADD', K('devs', 'name'), 0, name .. '\0' .. id)
redis.call('ZADD', K('devs', 'type'), 0, typ .. '\0' .. id)
redis.call('ZADD', K('devs', 'label'), 0, label .. '\0' .. id)
return 'OK'
