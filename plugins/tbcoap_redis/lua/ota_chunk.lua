-- ARGV: P, upload id, index, data.  One chunk of an upload (a hash per upload: index -> bytes)
redis.call('HSET', K('otadata', ARGV[2]), ARGV[3], ARGV[4])
return 1
