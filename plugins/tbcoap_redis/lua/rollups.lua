-- The rollup helpers (a library: put after the prelude before the scripts that begin with
-- '-- uses rollups.lua'; see rollups.py).  A series 'device\0key' has its watermark in the hash
-- 'rolled' (a day start: its rollup rows below it are complete, except on its dirty days), is in
-- the set 'rolling' (score: its watermark) while its newest point's day is past the watermark, has
-- its dirty days in 'tsd:device:key' (scores) and is in the set 'dirty' while it has some.  Rows
-- are 'tsr:device:key:res' (score: the bucket start), members 'bucket|n|nl|nd|sl|sd|minl|maxl|mind|maxd'
-- (sums as numbers, minima and maxima as the stored value's text; '' for none; sl 'X' past 2^53).
local DAY = 86400000
local RES = {60000, 600000, 3600000, 86400000}
local FIRST = -4503599616000000  -- the first day rolled up (from -2^52: timestamps are exact doubles)
local function fday(ts) if ts < FIRST then return FIRST end return ts - ts % DAY end
local function sname(device, key) return device .. '\0' .. key end
local function rkey(device, key, res) return K('tsr', device, key, res) end
local function set_rolled(device, key, day)  -- a watermark moves back (or is set)
  local s = sname(device, key)
  local r = tonumber(redis.call('HGET', K('rolled'), s))
  if not r or day < r then
    redis.call('HSET', K('rolled'), s, day)
    redis.call('ZADD', K('rolling'), day, s)
  end
end
local function mark_dirty(device, key, day)
  local r = tonumber(redis.call('HGET', K('rolled'), sname(device, key)))
  if r and day < r and day >= FIRST then
    redis.call('ZADD', K('tsd', device, key), day, day)
    redis.call('SADD', K('dirty'), sname(device, key))
  end
end
local function drop_rows(device, key, lo, hi)  -- the rows of buckets [lo, hi)
  for _, res in ipairs(RES) do redis.call('ZREMRANGEBYSCORE', rkey(device, key, res), lo, '(' .. hi) end
  redis.call('ZREMRANGEBYSCORE', K('tsd', device, key), lo, '(' .. hi)
  if redis.call('EXISTS', K('tsd', device, key)) == 0 then redis.call('SREM', K('dirty'), sname(device, key)) end
end
local function forget(device, key)  -- a series without history: no rollups, no watermark
  for _, res in ipairs(RES) do redis.call('DEL', rkey(device, key, res)) end
  redis.call('DEL', K('tsd', device, key))
  redis.call('SREM', K('dirty'), sname(device, key))
  redis.call('HDEL', K('rolled'), sname(device, key))
  redis.call('ZREM', K('rolling'), sname(device, key))
end
local function deleted_range(device, key, start, stop)  -- points of [start, stop) were deleted
  local r = tonumber(redis.call('HGET', K('rolled'), sname(device, key)))
  if not r or start >= r then return end
  local lo, hi = math.max(-(fday(-start)), FIRST), fday(stop)
  if lo < hi then drop_rows(device, key, lo, hi) end
  if start % DAY ~= 0 then mark_dirty(device, key, fday(start)) end
  if stop % DAY ~= 0 then mark_dirty(device, key, fday(stop)) end
end
local ROW_PATTERN = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$'
local function state() return {n = 0, nl = 0, nd = 0, sl = 0, sd = 0} end
local function add_value(b, kind, text)  -- one stored value into a state
  b.n = b.n + 1
  if kind ~= 'L' and kind ~= 'D' then return end
  local x = tonumber(text)
  if kind == 'L' then
    b.nl, b.sl = b.nl + 1, b.sl + x
    if not b.minl or x < b.minl then b.minl, b.minlt = x, text end
    if not b.maxl or x > b.maxl then b.maxl, b.maxlt = x, text end
  else
    b.nd, b.sd = b.nd + 1, b.sd + x
    if not b.mind or x < b.mind then b.mind, b.mindt = x, text end
    if not b.maxd or x > b.maxd then b.maxd, b.maxdt = x, text end
  end
end
local function add_state(b, c)  -- a state into another
  b.n, b.nl, b.nd, b.sl, b.sd = b.n + c.n, b.nl + c.nl, b.nd + c.nd, b.sl + c.sl, b.sd + c.sd
  b.over = b.over or c.over
  if c.minl and (not b.minl or c.minl < b.minl) then b.minl, b.minlt = c.minl, c.minlt end
  if c.maxl and (not b.maxl or c.maxl > b.maxl) then b.maxl, b.maxlt = c.maxl, c.maxlt end
  if c.mind and (not b.mind or c.mind < b.mind) then b.mind, b.mindt = c.mind, c.mindt end
  if c.maxd and (not b.maxd or c.maxd > b.maxd) then b.maxd, b.maxdt = c.maxd, c.maxdt end
end
local function add_row(b, member)  -- a row member into a state; its bucket
  local bucket, n, nl, nd, sl, sd, minl, maxl, mind, maxd = string.match(member, ROW_PATTERN)
  b.n, b.nl, b.nd, b.sd = b.n + n, b.nl + nl, b.nd + nd, b.sd + sd
  if sl == 'X' then b.over = true else b.sl = b.sl + sl end
  local x
  if minl ~= '' then x = tonumber(minl); if not b.minl or x < b.minl then b.minl, b.minlt = x, minl end end
  if maxl ~= '' then x = tonumber(maxl); if not b.maxl or x > b.maxl then b.maxl, b.maxlt = x, maxl end end
  if mind ~= '' then x = tonumber(mind); if not b.mind or x < b.mind then b.mind, b.mindt = x, mind end end
  if maxd ~= '' then x = tonumber(maxd); if not b.maxd or x > b.maxd then b.maxd, b.maxdt = x, maxd end end
  return tonumber(bucket)
end
local function fields(b)  -- a state as its reply fields (after its bucket or answer bucket)
  local sl = (b.over or math.abs(b.sl) >= 2^53) and 'X' or string.format('%d', b.sl)
  return {tostring(b.n), tostring(b.nl), tostring(b.nd), sl, string.format('%.17g', b.sd),
          b.minlt or '', b.maxlt or '', b.mindt or '', b.maxdt or ''}
end
local function roll(device, key, lo, hi)  -- recompute the rows of the days [lo, hi); the points read
  drop_rows(device, key, lo, hi)
  local points = redis.call('ZRANGEBYSCORE', K('tsh', device, key), lo, '(' .. hi)
  local finer, order = {}, {}
  for _, member in ipairs(points) do
    local bar = string.find(member, '|', 1, true)
    local ts = tonumber(string.sub(member, 1, bar - 1))
    local bucket = ts - ts % RES[1]
    local b = finer[bucket]
    if not b then b = state(); finer[bucket] = b; order[#order + 1] = bucket end
    add_value(b, string.sub(member, bar + 1, bar + 1), string.sub(member, bar + 2))
  end
  for level, res in ipairs(RES) do
    local rows, coarser, next_order = {}, {}, {}
    for _, bucket in ipairs(order) do
      local b = finer[bucket]
      rows[#rows + 1] = bucket
      rows[#rows + 1] = bucket .. '|' .. table.concat(fields(b), '|')
      if #rows >= 2000 then redis.call('ZADD', rkey(device, key, res), unpack(rows)); rows = {} end
      if RES[level + 1] then
        local up = bucket - bucket % RES[level + 1]
        local c = coarser[up]
        if not c then c = state(); coarser[up] = c; next_order[#next_order + 1] = up end
        add_state(c, b)
      end
    end
    if #rows > 0 then redis.call('ZADD', rkey(device, key, res), unpack(rows)) end
    finer, order = coarser, next_order
  end
  return #points
end
