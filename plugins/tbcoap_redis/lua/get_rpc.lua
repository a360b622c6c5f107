-- ARGV: P, id, or P, '', device, request id
local id = ARGV[2]
if id == '' then
  id = redis.call('HGET', K('rpcs', ARGV[3], 'ids'), ARGV[4])
  if not id then return NIL end
end
local r = redis.call('HMGET', K('rpc', id), 'id', 'device', 'request', 'method', 'params', 'oneway', 'persistent',
  'expires', 'created', 'status', 'response')
if not r[1] then return NIL end
return r
