-- ARGV: P, id
local id = ARGV[2]
local r = redis.call('HMGET', K('rpc', id), 'device', 'request')
if not r[1] then return 0 end
redis.call('DEL', K('rpc', id))
redis.call('ZREM', K('rpcs', r[1]), id)
redis.call('HDEL', K('rpcs', r[1], 'ids'), r[2])
local pending = K('rpcs', r[1], 'pending')
redis.call('ZREM', pending, id)
if redis.call('ZCARD', pending) == 0 then redis.call('SREM', K('rpcs', 'pending'), r[1]) end
return 1
