-- uses rollups.lua
-- ARGV: P, now, older than ('' = no age limit), limit. Deletes at most limit history points and
-- looks at most at limit series: those whose oldest point is older than the limit ('series' scores
-- are <= each series' oldest ts; a series with no history left leaves the set), then points whose
-- own time to live ended ('expiring'). Latest values stay. Returns {deleted, 1 if it stopped at a
-- limit else 0}.
local now, cutoff, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local deleted, visited = 0, 0
if cutoff ~= '' then
  for _, series in ipairs(redis.call('ZRANGEBYSCORE', K('series'), '-inf', '(' .. cutoff, 'LIMIT', 0, limit)) do
    if deleted >= limit then break end
    visited = visited + 1
    local device, key = string.match(series, '^(.-)%z(.*)$')
    local history = K('tsh', device, key)
    local old = redis.call('ZRANGEBYSCORE', history, '-inf', '(' .. cutoff, 'LIMIT', 0, limit - deleted)
    if #old > 0 then
      local last = old[#old]
      redis.call('ZREMRANGEBYSCORE', history, '-inf', string.sub(last, 1, string.find(last, '|', 1, true) - 1))
      deleted = deleted + #old
    end
    local oldest = redis.call('ZRANGE', history, 0, 0, 'WITHSCORES')
    if oldest[2] then
      redis.call('ZADD', K('series'), 'XX', oldest[2], series)
      deleted_range(device, key, FIRST, tonumber(oldest[2]))
    else  -- no history left: the next point saved puts the series back
      redis.call('ZREM', K('series'), series)
      forget(device, key)
    end
  end
end
if deleted >= limit or visited >= limit then return {deleted, 1} end
local budget = limit - deleted
local entries = redis.call('ZRANGEBYSCORE', K('expiring'), '-inf', now, 'LIMIT', 0, budget)
for _, entry in ipairs(entries) do
  local device, key, ts = string.match(entry, '^(.-)%z(.-)%z(-?%d+)$')
  deleted = deleted + redis.call('ZREMRANGEBYSCORE', K('tsh', device, key), ts, ts)
  mark_dirty(device, key, fday(tonumber(ts)))
  redis.call('ZREM', K('expiring'), entry)
end
return {deleted, #entries >= budget and 1 or 0}
