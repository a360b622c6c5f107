-- ARGV: P, device, start, end, limit, desc ('1'/'0'), keys... (none: all)
local device, start, stop, limit, desc = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6] == '1'
local keys = {}
if #ARGV == 6 then keys = redis.call('HKEYS', K('tsl', device)) else
  for i = 7, #ARGV do keys[#keys + 1] = ARGV[i] end
end
local out = {}
for _, key in ipairs(keys) do
  local points
  if desc then points = redis.call('ZREVRANGEBYSCORE', K('tsh', device, key), stop, start, 'LIMIT', 0, limit)
  else points = redis.call('ZRANGEBYSCORE', K('tsh', device, key), start, stop, 'LIMIT', 0, limit) end
  if #points > 0 then out[#out + 1] = key; out[#out + 1] = points end
end
return out
