-- ARGV: P, offset, limit, profile ('' for all), type.  {total, package fields...}
local index = K('otas')
if ARGV[4] ~= '' then index = K('otas', ARGV[4], ARGV[5]) end
local out = {redis.call('ZCARD', index)}
for _, id in ipairs(redis.call('ZRANGE', index, ARGV[2], tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1)) do
  out[#out + 1] = redis.call('HMGET', K('ota', id), 'id', 'title', 'version', 'type', 'profile', 'tag', 'created',
    'file', 'ctype', 'size', 'alg', 'checksum', 'data')
end
return out
