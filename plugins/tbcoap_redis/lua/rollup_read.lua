-- uses rollups.lua
-- ARGV: P, device, key, start, interval, what ('plan' or 'read'), then for 'plan' the range's end, for
-- 'read' the ranges as text: 'res lo hi' (res a resolution or 'raw') separated by ';'. 'plan': {watermark or '', dirty days from start's day to
-- the end...}. 'read': per answer bucket k touched, 'k|' and the state's 9 fields (rollups.lua), from the
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
local history, row_keys = K('tsh', device, key), {}
local function bucket_of(ts) return math.floor((ts - start) / interval) end
for res, lo, hi in string.gmatch(ARGV[7], '(%w+) (-?%d+) (-?%d+)') do
  if res == 'raw' then
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', history, lo, '(' .. hi)) do
      local bar = string.find(member, '|', 1, true)
      add_value(into(bucket_of(tonumber(string.sub(member, 1, bar - 1)))), string.sub(member, bar + 1, bar + 1),
                string.sub(member, bar + 2))
    end
  else
    local rows = row_keys[res]
    if not rows then rows = K('tsr', device, key, res); row_keys[res] = rows end
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', rows, lo, '(' .. hi)) do
      local bar = string.find(member, '|', 1, true)
      add_row(into(bucket_of(tonumber(string.sub(member, 1, bar - 1)))), member)
    end
  end
end
local out = {}
for _, k in ipairs(order) do out[#out + 1] = tostring(k) .. '|' .. table.concat(fields(states[k]), '|') end
return out
