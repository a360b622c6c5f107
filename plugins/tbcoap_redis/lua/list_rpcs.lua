-- ARGV: P, device, offset, limit (newest first)
local key = K('rpcs', ARGV[2])
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {redis.call('ZCARD', key)}
if limit > 0 then
  for _, id in ipairs(redis.call('ZREVRANGE', key, offset, offset + limit - 1)) do
    out[#out + 1] = redis.call('HMGET', K('rpc', id), 'id', 'device', 'request', 'method', 'params', 'oneway',
      'persistent', 'expires', 'created', 'status', 'response')
  end
end
return out
