-- ARGV: P, id, title, version, type, profile, tag, created.  'NOPROFILE', 'DUP' or 1
local id, title, version, typ, profile = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', K('prof', profile)) == 0 then return 'NOPROFILE' end
local unique = table.concat({title, version, typ, profile}, '\0')
if redis.call('HEXISTS', K('ota', 'unique'), unique) == 1 then return 'DUP' end
redis.call('HSET', K('ota', 'unique'), unique, id)
redis.call('HSET', K('ota', id), 'id', id, 'title', title, 'version', version, 'type', typ, 'profile', profile,
  'created', ARGV[8])
if ARGV[7] ~= '' then redis.call('HSET', K('ota', id), 'tag', ARGV[7]) end
redis.call('ZADD', K('otas'), ARGV[8], id)
return 1
