-- ARGV: P, upload id.  Remove an upload's chunks.
local upload = ARGV[2]
local n = tonumber(redis.call('GET', K('otadata', upload, 'n')) or '0')
for index = 0, n - 1 do redis.call('UNLINK', K('otadata', upload, index)) end
redis.call('DEL', K('otadata', upload, 'n'))
return 1
