-- ARGV: P, index ('' for an id, else 'dev:name' or 'token'), value, credentials type (with 'token')
local id = ARGV[3]
if ARGV[2] ~= '' then
  id = redis.call('HGET', P .. ':' .. ARGV[2], ARGV[3])
  if not id then return NIL end
end
local d = redis.call('HMGET', K('dev', id), 'id', 'name', 'type', 'label', 'created', 'customer', 'info', 'transport', 'ctype')
if not d[1] then return NIL end
if ARGV[4] and (d[9] or 'ACCESS_TOKEN') ~= ARGV[4] then return NIL end
d[9] = nil
return d
