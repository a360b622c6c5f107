-- ARGV: P, id, title, created, key digest
local id, title, created, digest = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', K('cust', 'key'), digest) == 1 then return 'DUPKEY' end
if redis.call('EXISTS', K('cust', id)) == 1 then return 'DUPID' end
if redis.call('HEXISTS', K('cust', 'title'), title) == 1 then return 'DUPNAME' end
redis.call('HSET', K('cust', id), 'id', id, 'title', title, 'created', created, 'digest', digest)
redis.call('HSET', K('cust', 'key'), digest, id)
redis.call('HSET', K('cust', 'title'), title, id)
redis.call('ZADD', K('custs'), created, id)
return 'OK'
