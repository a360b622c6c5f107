-- uses rollups.lua
-- ARGV: P, device, key, start, interval, what ('plan' or 'read'), then for 'plan' the range's end, for
-- 'read' groups of (res or 'raw', lo, hi). 'plan': {watermark or '', dirty days from start's day to
-- the end...}. 'read': per answer bucket k touched, k and the state's 9 fields (rollups.lua), from the
-- rows of each range's resolution lying in it, or its raw points.
local device, key, start, interval = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[6] == 'plan' then
  local out = {redis.call('HGET', K('rolled'), sname(device, key)) or ''}
  for _, day in ipairs(redis.call('ZRANGEBYSCORE', K('tsd', device, key), fday(start), '(' .. ARGV[7])) do
    out[#out + 1] = day
  end
  return out
end
local states, order = {}, {}
local function into(k)
  local b = states[k]
  if not b then b = state(); states[k] = b; order[#order + 1] = k end
  return b
end
for i = 7, #ARGV, 3 do
  local res, lo, hi = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if res == 'raw' then
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', K('tsh', device, key), lo, '(' .. hi)) do
      local bar = string.find(member, '|', 1, true)
      local ts = tonumber(string.sub(member, 1, bar - 1))
      add_value(into(math.floor((ts - start) / interval)), string.sub(member, bar + 1, bar + 1), string.sub(member, bar + 2))
    end
  else
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', K('tsr', device, key, res), lo, '(' .. hi)) do
      local bucket, b = parse_row(member)
      add_state(into(math.floor((bucket - start) / interval)), b)
    end
  end
end
local out = {}
for _, k in ipairs(order) do
  out[#out + 1] = tostring(k)
  for _, f in ipairs(fields(states[k])) do out[#out + 1] = f end
end
return out
