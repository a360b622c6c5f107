-- uses rollups.lua
-- ARGV: P, upper (the present day's start), limit. Recomputes dirty days, then rolls whole days of
-- the series in 'rolling' from their watermark up to the day of their newest point (at most upper),
-- reading about limit points (at least one day of one series) and looking at most at limit series.
-- Returns {points read, 1 if it stopped at a limit else 0}.
local upper, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local done, visited = 0, 0
for _, s in ipairs(redis.call('SRANDMEMBER', K('dirty'), limit)) do
  if done >= limit then break end
  local device, key = string.match(s, '^(.-)%z(.*)$')
  for _, day in ipairs(redis.call('ZRANGE', K('tsd', device, key), 0, 9)) do
    visited = visited + 1
    done = done + roll(device, key, tonumber(day), tonumber(day) + DAY)  -- (drops the day from tsd)
  end
end
while done < limit and visited < limit do
  local first = redis.call('ZRANGEBYSCORE', K('rolling'), '-inf', '(' .. upper, 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then break end
  visited = visited + 1
  local s, rolled = first[1], tonumber(first[2])
  local device, key = string.match(s, '^(.-)%z(.*)$')
  local current = redis.call('HGET', K('tsl', device), key)
  local newest = current and tonumber(string.match(current, '^(-?%d+)|'))
  local high = newest and math.min(upper, fday(newest)) or rolled
  if rolled >= high then
    redis.call('ZREM', K('rolling'), s)  -- nothing to roll until a point of a later day
  else
    local bound = redis.call('ZRANGEBYSCORE', K('tsh', device, key), rolled, '(' .. high, 'LIMIT', limit - done, 1)
    if bound[1] then
      high = math.max(rolled + DAY, fday(tonumber(string.match(bound[1], '^(-?%d+)|'))))
    end
    done = done + roll(device, key, rolled, high)
    redis.call('HSET', K('rolled'), s, string.format('%d', high))
    redis.call('ZADD', K('rolling'), high, s)
  end
end
return {done, (done >= limit or visited >= limit) and 1 or 0}
