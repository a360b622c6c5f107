-- ARGV: P, index ('' for an id, else 'key' or 'title'), value
local id = ARGV[3]
if ARGV[2] ~= '' then
  id = redis.call('HGET', K('cust', ARGV[2]), ARGV[3])
  if not id then return NIL end
end
local c = redis.call('HMGET', K('cust', id), 'id', 'title', 'created')
if not c[1] then return NIL end
return c
