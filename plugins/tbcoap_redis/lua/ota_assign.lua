-- ARGV: P, entity id, type, package id ('' to unassign).  'NOENTITY', 'NOPACKAGE', 'WRONGTYPE' or 1
local entity, typ, package = ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', K('dev', entity)) == 0 and redis.call('EXISTS', K('prof', entity)) == 0 then
  return 'NOENTITY'
end
if package ~= '' then
  local found = redis.call('HGET', K('ota', package), 'type')
  if not found then return 'NOPACKAGE' end
  if found ~= typ then return 'WRONGTYPE' end
end
local old = redis.call('HGET', K('ota', 'assign', entity), typ)
if old then redis.call('SREM', K('ota', old, 'assigned'), entity) end
if package == '' then
  redis.call('HDEL', K('ota', 'assign', entity), typ)
else
  redis.call('HSET', K('ota', 'assign', entity), typ, package)
  redis.call('SADD', K('ota', package, 'assigned'), entity)
end
return 1
