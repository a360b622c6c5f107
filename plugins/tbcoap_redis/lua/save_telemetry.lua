-- uses rollups.lua
-- ARGV: P, JSON [[device, [[ts, key, encoded value], ...], ttl ms or null], ...] (ts as text): the saves of
-- one reactor turn.  Members are 'ts|value'.  Returns 'OK' or 'NOTFOUND' per save: each is stored
-- whole or (an unknown device) not at all.
--
-- The saves are gathered per series first, then written with a few calls per series rather than
-- per point: points of one series with the same ts collapse to the last one written (as writing
-- them one by one would leave them), and the newest point becomes the latest value once.
local out, known, series, order = {}, {}, {}, {}
for _, save in ipairs(cjson.decode(ARGV[2])) do
  local device, ttl = save[1], save[3]
  if known[device] == nil then known[device] = redis.call('EXISTS', K('dev', device)) == 1 end
  if not known[device] then
    out[#out + 1] = 'NOTFOUND'
  else
    out[#out + 1] = 'OK'
    for _, entry in ipairs(save[2]) do
      local ts, key, value = entry[1], entry[2], entry[3]
      local name = sname(device, key)
      local s = series[name]
      if not s then
        local current = redis.call('HGET', K('tsl', device), key)
        local stored = current and tonumber(string.match(current, '^(-?%d+)|'))
        s = {device = device, key = key, stored = stored, newest = stored, points = {}, times = {}}
        series[name] = s
        order[#order + 1] = s
      end
      local t = tonumber(ts)
      if not s.points[ts] then s.times[#s.times + 1] = ts end
      s.points[ts] = {value, ttl}
      if not s.low or t < s.low then s.low, s.low_text = t, ts end
      -- rollups: a point at or before the newest may be below the watermark; a point on a new day
      -- gives the series days to roll
      if not s.newest or s.newest >= t then
        local day = fday(t)
        if not s.back or day < s.back then s.back = day end
      elseif t - t % DAY > s.newest - s.newest % DAY then
        s.new_day = true
      end
      if not s.newest or s.newest <= t then  -- the latest value: the newest ts, the last written of it
        s.newest, s.latest = t, ts .. '|' .. value
      end
    end
  end
end

for _, s in ipairs(order) do
  local device, key, stored = s.device, s.key, s.stored
  local history = K('tsh', device, key)
  local members = {}
  for _, ts in ipairs(s.times) do
    local t, point = tonumber(ts), s.points[ts]
    if stored and stored >= t then  -- not after every stored point: one may have this ts
      for _, old in ipairs(redis.call('ZRANGEBYSCORE', history, ts, ts)) do
        if string.sub(old, 1, #ts + 1) == ts .. '|' then redis.call('ZREM', history, old) end
      end
    end
    members[#members + 1] = ts
    members[#members + 1] = ts .. '|' .. point[1]
    if #members >= 1000 then
      redis.call('ZADD', history, unpack(members))
      members = {}
    end
    if point[2] then  -- a time to live: found by retention in the expiry index
      redis.call('ZADD', K('expiring'), t + point[2], device .. '\0' .. key .. '\0' .. ts)
    elseif stored and stored >= t then  -- a point written again without one keeps
      redis.call('ZREM', K('expiring'), device .. '\0' .. key .. '\0' .. ts)
    end
  end
  if #members > 0 then redis.call('ZADD', history, unpack(members)) end
  redis.call('ZADD', K('series'), 'LT', s.low_text, device .. '\0' .. key)  -- the score stays <= its oldest
  if s.latest then redis.call('HSET', K('tsl', device), key, s.latest) end
  if s.back then set_rolled(device, key, s.back) end
  if s.new_day then
    local r = redis.call('HGET', K('rolled'), sname(device, key))
    if r then redis.call('ZADD', K('rolling'), 'NX', r, sname(device, key)) end
  end
end
return out
