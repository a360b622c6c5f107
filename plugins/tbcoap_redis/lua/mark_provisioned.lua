-- ARGV: P, device, 'ts|Sprovisioned': the SERVER_SCOPE attribute provisionState, set unless there is one
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
return redis.call('HSETNX', K('attr', ARGV[2], 'SERVER_SCOPE'), 'provisionState', ARGV[3])
