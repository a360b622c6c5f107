-- ARGV: P, id, device, method, params, oneway, persistent, expires, created, status, response ('\0' = none)
local PENDING = {QUEUED = true, SENT = true, DELIVERED = true}  -- the statuses not yet final
local id, device = ARGV[2], ARGV[3]
if redis.call('EXISTS', K('dev', device)) == 0 then return 'NOTFOUND' end
if redis.call('EXISTS', K('rpc', id)) == 1 then return 'DUPID' end
local n = redis.call('HINCRBY', K('rpcs', 'counters'), device, 1)
redis.call('HSET', K('rpc', id), 'id', id, 'device', device, 'request', n, 'method', ARGV[4], 'params', ARGV[5],
  'oneway', ARGV[6], 'persistent', ARGV[7], 'expires', ARGV[8], 'created', ARGV[9], 'status', ARGV[10])
if ARGV[11] ~= '\0' then redis.call('HSET', K('rpc', id), 'response', ARGV[11]) end
redis.call('ZADD', K('rpcs', device), n, id)
redis.call('HSET', K('rpcs', device, 'ids'), n, id)
if PENDING[ARGV[10]] then
  redis.call('ZADD', K('rpcs', device, 'pending'), n, id)
  redis.call('SADD', K('rpcs', 'pending'), device)
end
return n
