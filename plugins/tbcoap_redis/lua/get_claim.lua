-- ARGV: P, device
local c = redis.call('HMGET', K('claim', ARGV[2]), 'secret', 'expires')
if not c[1] then return NIL end
return c
