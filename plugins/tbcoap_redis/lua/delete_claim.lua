-- ARGV: P, device
return redis.call('DEL', K('claim', ARGV[2]))
