-- ARGV: P, id. The 'token' field holds the credentials id (a token or a certificate's digest).
return redis.call('HMGET', K('dev', ARGV[2]), 'token', 'ctype', 'cvalue')
