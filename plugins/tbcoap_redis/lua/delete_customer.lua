-- ARGV: P, id: the customer goes with its key and title entries; its devices become free
local id = ARGV[2]
local c = redis.call('HMGET', K('cust', id), 'title', 'digest')
if not c[1] then return 0 end
for _, device in ipairs(redis.call('ZRANGE', K('cust', id, 'devs'), 0, -1)) do
  redis.call('HDEL', K('dev', device), 'customer')
end
redis.call('DEL', K('cust', id, 'devs'))
if redis.call('HGET', K('cust', 'title'), c[1]) == id then redis.call('HDEL', K('cust', 'title'), c[1]) end
-- customers made before the digest was kept with them leave their key entry behind: it finds no
-- customer (customer_by checks the record), and the same key cannot be made again by chance
if c[2] then redis.call('HDEL', K('cust', 'key'), c[2]) end
redis.call('ZREM', K('custs'), id)
redis.call('DEL', K('cust', id))
return 1
