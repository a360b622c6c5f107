-- ARGV: P, id.  The package's fields, or nil
local f = redis.call('HMGET', K('ota', ARGV[2]), 'id', 'title', 'version', 'type', 'profile', 'tag', 'created',
  'file', 'ctype', 'size', 'alg', 'checksum', 'data')
if not f[1] then return NIL end
return f
