-- uses rollups.lua
-- ARGV: P, device, start, end (excluded), delete latest ('1'/'0'), rewrite latest ('1'/'0'), keys...
local device, start, stop = ARGV[2], ARGV[3], ARGV[4]
local delete_latest, rewrite = ARGV[5] == '1', ARGV[6] == '1'
if redis.call('EXISTS', K('dev', device)) == 0 then return 'NOTFOUND' end
for i = 7, #ARGV do
  local key = ARGV[i]
  local history = K('tsh', device, key)
  redis.call('ZREMRANGEBYSCORE', history, start, '(' .. stop)
  deleted_range(device, key, tonumber(start), tonumber(stop))
  local current = redis.call('HGET', K('tsl', device), key)
  local ts = current and tonumber(string.match(current, '^(-?%d+)|'))
  if ts and ts >= tonumber(start) and ts < tonumber(stop) and delete_latest then
    local newest = rewrite and redis.call('ZREVRANGE', history, 0, 0)[1]
    if newest then
      redis.call('HSET', K('tsl', device), key, newest)
      if redis.call('HEXISTS', K('rolled'), sname(device, key)) == 1 then  -- the watermark stays at or before the newest
        set_rolled(device, key, fday(tonumber(string.match(newest, '^(-?%d+)|'))))
      end
    else
      redis.call('HDEL', K('tsl', device), key)
      if redis.call('EXISTS', history) == 0 then redis.call('ZREM', K('series'), device .. '\0' .. key); forget(device, key) end
    end
  end
end
return 'OK'
