-- ARGV: P, id, credentials id, type, value ('' = none)
local id, cid, ctype, cvalue = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local old = redis.call('HGET', K('dev', id), 'token')
if not old then return 'NOTFOUND' end
local owner = redis.call('HGET', K('token'), cid)
if owner and owner ~= id then return 'DUPTOKEN' end
redis.call('HDEL', K('token'), old)
redis.call('HSET', K('token'), cid, id)
redis.call('HSET', K('dev', id), 'token', cid)
if ctype == 'ACCESS_TOKEN' then redis.call('HDEL', K('dev', id), 'ctype', 'cvalue')
else redis.call('HSET', K('dev', id), 'ctype', ctype, 'cvalue', cvalue) end
return 'OK'
