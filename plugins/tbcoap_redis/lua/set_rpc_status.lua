-- ARGV: P, id, status, response ('\0' = keep), expected statuses... (none: any)
local PENDING = {QUEUED = true, SENT = true, DELIVERED = true}  -- the statuses not yet final
local id, status, response = ARGV[2], ARGV[3], ARGV[4]
local r = redis.call('HMGET', K('rpc', id), 'status', 'device', 'request')
if not r[1] then return 0 end
if #ARGV > 4 then
  local ok = false
  for i = 5, #ARGV do if ARGV[i] == r[1] then ok = true end end
  if not ok then return 0 end
end
redis.call('HSET', K('rpc', id), 'status', status)
if response ~= '\0' then redis.call('HSET', K('rpc', id), 'response', response) end
local pending = K('rpcs', r[2], 'pending')
if PENDING[status] then
  redis.call('ZADD', pending, r[3], id)
  redis.call('SADD', K('rpcs', 'pending'), r[2])
else
  redis.call('ZREM', pending, id)
  if redis.call('ZCARD', pending) == 0 then redis.call('SREM', K('rpcs', 'pending'), r[2]) end
end
return 1
