-- ARGV: P, id, upload id, file name, content type, size, algorithm, checksum.  'NOTFOUND', 'HASDATA' or 1
-- (a refused upload's chunks go at once)
local id, upload = ARGV[2], ARGV[3]
local f = redis.call('HMGET', K('ota', id), 'id', 'data', 'profile', 'type', 'created')
if not f[1] then redis.call('UNLINK', K('otadata', upload)) return 'NOTFOUND' end
if f[2] then redis.call('UNLINK', K('otadata', upload)) return 'HASDATA' end
redis.call('HSET', K('ota', id), 'file', ARGV[4], 'ctype', ARGV[5], 'size', ARGV[6], 'alg', ARGV[7],
  'checksum', ARGV[8], 'data', upload)
redis.call('ZADD', K('otas', f[3], f[4]), f[5], id)
return 1
