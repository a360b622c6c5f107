-- uses rollups.lua
-- ARGV: P, id
local id = ARGV[2]
local d = redis.call('HMGET', K('dev', id), 'name', 'type', 'label', 'customer', 'token')
if not d[1] then return 0 end
local name, typ, label, customer, token = d[1], d[2], d[3] or '', d[4], d[5]
redis.call('HDEL', K('dev', 'name'), name)
redis.call('HDEL', K('token'), token)
redis.call('ZREM', K('devs', 'createdTime'), id)
redis.call('ZREM', K('devs', 'name'), name .. '\0' .. id)
redis.call('ZREM', K('devs', 'type'), typ .. '\0' .. id)
redis.call('ZREM', K('devs', 'label'), label .. '\0' .. id)
if customer then redis.call('ZREM', K('cust', customer, 'devs'), id) end
for _, key in ipairs(redis.call('HKEYS', K('tsl', id))) do
  redis.call('UNLINK', K('tsh', id, key))  -- freed in the background: a series may be large
  redis.call('ZREM', K('series'), id .. '\0' .. key)
  forget(id, key)
end
redis.call('DEL', K('tsl', id))
for _, scope in ipairs({'CLIENT_SCOPE', 'SHARED_SCOPE', 'SERVER_SCOPE'}) do redis.call('DEL', K('attr', id, scope)) end
for _, rpc in ipairs(redis.call('ZRANGE', K('rpcs', id), 0, -1)) do redis.call('DEL', K('rpc', rpc)) end
redis.call('DEL', K('rpcs', id), K('rpcs', id, 'pending'), K('rpcs', id, 'ids'))
redis.call('SREM', K('rpcs', 'pending'), id)
redis.call('HDEL', K('rpcs', 'counters'), id)
redis.call('DEL', K('claim', id))
redis.call('DEL', K('dev', id))
return 1
