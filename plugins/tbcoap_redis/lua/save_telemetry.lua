-- uses rollups.lua
-- ARGV: P, JSON [[device, [[ts, key, encoded value], ...], ttl ms or null], ...] (ts as text): the saves of
-- one reactor turn.  Members are 'ts|value'.  Returns 'OK' or 'NOTFOUND' per save: each is stored
-- whole or (an unknown device) not at all.
local out = {}
for _, save in ipairs(cjson.decode(ARGV[2])) do
  local device = save[1]
  if redis.call('EXISTS', K('dev', device)) == 0 then
    out[#out + 1] = 'NOTFOUND'
  else
    out[#out + 1] = 'OK'
    local latest = K('tsl', device)
    for _, entry in ipairs(save[2]) do
      local ts, key, value = entry[1], entry[2], entry[3]
      local history = K('tsh', device, key)
      local member = ts .. '|' .. value
      local current = redis.call('HGET', latest, key)
      local newest = current and tonumber(string.match(current, '^(-?%d+)|'))
      if newest and newest >= tonumber(ts) then  -- not after every point: one may have this ts
        for _, old in ipairs(redis.call('ZRANGEBYSCORE', history, ts, ts)) do
          if string.sub(old, 1, #ts + 1) == ts .. '|' then redis.call('ZREM', history, old) end
        end
      end
      redis.call('ZADD', history, ts, member)
      if save[3] then  -- a time to live: found by retention in the expiry index
        redis.call('ZADD', K('expiring'), tonumber(ts) + save[3], device .. '\0' .. key .. '\0' .. ts)
      elseif newest and newest >= tonumber(ts) then  -- a point written again without one keeps
        redis.call('ZREM', K('expiring'), device .. '\0' .. key .. '\0' .. ts)
      end
      -- a new series, a point before its newest, or the first after retention emptied it:
      if not newest or newest >= tonumber(ts) or redis.call('ZCARD', history) == 1 then
        redis.call('ZADD', K('series'), 'LT', ts, device .. '\0' .. key)  -- the score stays <= its oldest
      end
      if not newest or newest <= tonumber(ts) then
        redis.call('HSET', latest, key, member)
      end
      -- rollups: a point at or before the newest may be below the watermark; a point on a new day
      -- gives the series days to roll
      local t = tonumber(ts)
      if not newest or newest >= t then
        set_rolled(device, key, fday(t))
      elseif t - t % DAY > newest - newest % DAY then
        local r = redis.call('HGET', K('rolled'), sname(device, key))
        if r then redis.call('ZADD', K('rolling'), 'NX', r, sname(device, key)) end
      end
    end
  end
end
return out
