-- ARGV: P, what ('profs' or 'custs'), offset, limit, fields...
local key = K(ARGV[2])
local item = ARGV[2] == 'profs' and 'prof' or 'cust'
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {redis.call('ZCARD', key)}
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGE', key, offset, offset + limit - 1)) do
    out[#out + 1] = redis.call('HMGET', K(item, id), unpack(fields))
  end
end
return out
