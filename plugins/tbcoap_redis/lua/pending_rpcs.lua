-- ARGV: P, device ('' = every device)
local devices = {ARGV[2]}
if ARGV[2] == '' then
  devices = redis.call('SMEMBERS', K('rpcs', 'pending'))
  table.sort(devices)
end
local out = {}
for _, device in ipairs(devices) do
  for _, id in ipairs(redis.call('ZRANGE', K('rpcs', device, 'pending'), 0, -1)) do
    out[#out + 1] = redis.call('HMGET', K('rpc', id), 'id', 'device', 'request', 'method', 'params', 'oneway',
      'persistent', 'expires', 'created', 'status', 'response')
  end
end
return out
