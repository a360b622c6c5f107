-- ARGV: P, upload id, index, data.  One chunk of an upload: the string P:otadata:{upload}:{index};
-- P:otadata:{upload}:n counts the chunks (one past the highest index written), for removing them.
local upload, index = ARGV[2], tonumber(ARGV[3])
redis.call('SET', K('otadata', upload, index), ARGV[4])
local n = tonumber(redis.call('GET', K('otadata', upload, 'n')) or '0')
if index + 1 > n then redis.call('SET', K('otadata', upload, 'n'), index + 1) end
return 1
