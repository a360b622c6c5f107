-- ARGV: P, entity id.  {type, package id, ...}
return redis.call('HGETALL', K('ota', 'assign', ARGV[2]))
