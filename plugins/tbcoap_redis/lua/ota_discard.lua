-- ARGV: P, upload id
redis.call('UNLINK', K('otadata', ARGV[2]))
return 1
