-- ARGV: P, device, key, from (a score: 'ts' or '(ts'), to (the other end, excluded), start, interval,
-- agg, budget, desc ('1'/'0'). Reads at most budget points of one series, from 'from' towards 'to'
-- (newest first with desc), so one call holds Redis for a bounded time; the store calls again from
-- the returned cursor. Returns {cursor or '', then per touched bucket: k, n, sum, min, max}, the
-- sum, min and max encoded as stored values ('L..'/'D..'; '' when the bucket saw no number).
local history = K('tsh', ARGV[2], ARGV[3])
local start, interval = tonumber(ARGV[6]), tonumber(ARGV[7])
local agg, budget, desc = ARGV[8], tonumber(ARGV[9]), ARGV[10] == '1'
local chunk
if desc then
  chunk = redis.call('ZREVRANGEBYSCORE', history, ARGV[4], ARGV[5], 'LIMIT', 0, budget)
else
  chunk = redis.call('ZRANGEBYSCORE', history, ARGV[4], ARGV[5], 'LIMIT', 0, budget)
end
local buckets, order = {}, {}
for _, member in ipairs(chunk) do
  local bar = string.find(member, '|', 1, true)
  local ts, kind, text = tonumber(string.sub(member, 1, bar - 1)), string.sub(member, bar + 1, bar + 1),
    string.sub(member, bar + 2)
  local numeric = kind == 'L' or kind == 'D'
  if agg == 'COUNT' or numeric then
    local k = math.floor((ts - start) / interval)
    local b = buckets[k]
    if not b then
      b = {n = 0, sum = 0, double = false}
      buckets[k] = b
      order[#order + 1] = k
    end
    b.n = b.n + 1
    if numeric then
      local x = tonumber(text)
      b.sum = b.sum + x
      b.double = b.double or kind == 'D'
      if not b.min or x < b.min then b.min, b.mintext = x, kind .. text end
      if not b.max or x > b.max then b.max, b.maxtext = x, kind .. text end
    end
  end
end
local cursor = ''
if #chunk == budget then
  local last = chunk[#chunk]
  cursor = '(' .. string.sub(last, 1, string.find(last, '|', 1, true) - 1)
end
local out = {cursor}
for _, k in ipairs(order) do
  local b = buckets[k]
  local sum = ''
  if b.min then
    if b.double or math.abs(b.sum) >= 2^53 then sum = 'D' .. string.format('%.17g', b.sum)
    else sum = 'L' .. string.format('%d', b.sum) end
  end
  out[#out + 1] = tostring(k)
  out[#out + 1] = tostring(b.n)
  out[#out + 1] = sum
  out[#out + 1] = b.mintext or ''
  out[#out + 1] = b.maxtext or ''
end
return out
