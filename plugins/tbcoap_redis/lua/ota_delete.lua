-- ARGV: P, id.  0: no such package; 'ASSIGNED' while a device or profile that exists has it; 1
local function remove_chunks(upload)
  local n = tonumber(redis.call('GET', K('otadata', upload, 'n')) or '0')
  for index = 0, n - 1 do redis.call('UNLINK', K('otadata', upload, index)) end
  redis.call('DEL', K('otadata', upload, 'n'))
end
local id = ARGV[2]
local f = redis.call('HMGET', K('ota', id), 'id', 'title', 'version', 'type', 'profile', 'data')
if not f[1] then return 0 end
for _, entity in ipairs(redis.call('SMEMBERS', K('ota', id, 'assigned'))) do
  if redis.call('EXISTS', K('dev', entity)) == 1 or redis.call('EXISTS', K('prof', entity)) == 1 then
    return 'ASSIGNED'
  end
  redis.call('HDEL', K('ota', 'assign', entity), f[4])  -- of a deleted device or profile
end
redis.call('DEL', K('ota', id, 'assigned'))
redis.call('HDEL', K('ota', 'unique'), table.concat({f[2], f[3], f[4], f[5]}, '\0'))
redis.call('ZREM', K('otas'), id)
redis.call('ZREM', K('otas', f[5], f[4]), id)
if f[6] then remove_chunks(f[6]) end
redis.call('DEL', K('ota', id))
return 1
