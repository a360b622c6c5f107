-- ARGV: P, device, customer ('' = free it), expected customer ('' = free)
local device, customer, expect = ARGV[2], ARGV[3], ARGV[4]
local d = redis.call('HMGET', K('dev', device), 'id', 'customer', 'created')
if not d[1] then return 'NOTFOUND' end
if customer ~= '' and redis.call('EXISTS', K('cust', customer)) == 0 then return 'NOCUSTOMER' end
if (d[2] or '') ~= expect then return 0 end
if d[2] then redis.call('ZREM', K('cust', d[2], 'devs'), device) end
if customer == '' then
  redis.call('HDEL', K('dev', device), 'customer')
else
  redis.call('HSET', K('dev', device), 'customer', customer)
  redis.call('ZADD', K('cust', customer, 'devs'), d[3], device)
end
return 1
