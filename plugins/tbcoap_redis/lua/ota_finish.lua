-- ARGV: P, id, upload id, file name, content type, size, algorithm, checksum.  'NOTFOUND', 'HASDATA' or 1
-- (a refused upload's chunks go at once)
local function remove_chunks(upload)
  local n = tonumber(redis.call('GET', K('otadata', upload, 'n')) or '0')
  for index = 0, n - 1 do redis.call('UNLINK', K('otadata', upload, index)) end
  redis.call('DEL', K('otadata', upload, 'n'))
end
local id, upload = ARGV[2], ARGV[3]
local f = redis.call('HMGET', K('ota', id), 'id', 'data', 'profile', 'type', 'created')
if not f[1] then remove_chunks(upload) return 'NOTFOUND' end
if f[2] then remove_chunks(upload) return 'HASDATA' end
redis.call('HSET', K('ota', id), 'file', ARGV[4], 'ctype', ARGV[5], 'size', ARGV[6], 'alg', ARGV[7],
  'checksum', ARGV[8], 'data', upload)
redis.call('ZADD', K('otas', f[3], f[4]), f[5], id)
return 1
