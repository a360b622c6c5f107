"""The Lua scripts of the Redis store: each store call is one script, run atomically in Redis.

Every script gets the key prefix as ARGV[1]; keys are built inside (docs/redis.md has the
layout). A script checks everything before its first write, so a refused call changes nothing.
Expected refusals are returned as ``{err = "CODE"}`` strings the store turns into tbcoap errors.
"""

COMMON = """
local P = ARGV[1]
local function K(...) return P .. ':' .. table.concat({...}, ':') end
local NIL = false
"""

# device hash fields, in the order the store reads them
DEVICE_FIELDS = ("id", "name", "type", "label", "created", "customer")

ADD_DEVICE = """
-- ARGV: P, id, name, type, label ('' = none), created, customer ('' = none), token, folded name, info ('' = none)
local id, name, typ, label, created, customer, token, fold = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local info = ARGV[10]
if redis.call('HEXISTS', K('dev', 'name'), name) == 1 then return 'DUPNAME' end
if redis.call('HEXISTS', K('token'), token) == 1 then return 'DUPTOKEN' end
if redis.call('EXISTS', K('dev', id)) == 1 then return 'DUPID' end
redis.call('HSET', K('dev', id), 'id', id, 'name', name, 'type', typ, 'created', created, 'token', token, 'fold', fold)
if label ~= '' then redis.call('HSET', K('dev', id), 'label', label) end
if info ~= '' then redis.call('HSET', K('dev', id), 'info', info) end
if customer ~= '' then
  redis.call('HSET', K('dev', id), 'customer', customer)
  redis.call('ZADD', K('cust', customer, 'devs'), created, id)
end
redis.call('HSET', K('dev', 'name'), name, id)
redis.call('HSET', K('token'), token, id)
redis.call('ZADD', K('devs', 'createdTime'), created, id)
redis.call('ZADD', K('devs', 'name'), 0, name .. '\\0' .. id)
redis.call('ZADD', K('devs', 'type'), 0, typ .. '\\0' .. id)
redis.call('ZADD', K('devs', 'label'), 0, label .. '\\0' .. id)
return 'OK'
"""

DEVICE_BY = """
-- ARGV: P, index ('' for an id, else 'dev:name' or 'token'), value, credentials type (with 'token')
local id = ARGV[3]
if ARGV[2] ~= '' then
  id = redis.call('HGET', P .. ':' .. ARGV[2], ARGV[3])
  if not id then return NIL end
end
local d = redis.call('HMGET', K('dev', id), 'id', 'name', 'type', 'label', 'created', 'customer', 'info', 'ctype')
if not d[1] then return NIL end
if ARGV[4] and (d[8] or 'ACCESS_TOKEN') ~= ARGV[4] then return NIL end
d[8] = nil
return d
"""

GET_CREDENTIALS = """
-- ARGV: P, id. The 'token' field holds the credentials id (a token or a certificate's digest).
return redis.call('HMGET', K('dev', ARGV[2]), 'token', 'ctype', 'cvalue')
"""

SET_CREDENTIALS = """
-- ARGV: P, id, credentials id, type, value ('' = none)
local id, cid, ctype, cvalue = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local old = redis.call('HGET', K('dev', id), 'token')
if not old then return 'NOTFOUND' end
local owner = redis.call('HGET', K('token'), cid)
if owner and owner ~= id then return 'DUPTOKEN' end
redis.call('HDEL', K('token'), old)
redis.call('HSET', K('token'), cid, id)
redis.call('HSET', K('dev', id), 'token', cid)
if ctype == 'ACCESS_TOKEN' then redis.call('HDEL', K('dev', id), 'ctype', 'cvalue')
else redis.call('HSET', K('dev', id), 'ctype', ctype, 'cvalue', cvalue) end
return 'OK'
"""

LIST_DEVICES = """
-- ARGV: P, sort (createdTime|name|type|label), desc ('1'/'0'), offset, limit, needle ('' = all), customer ('' = all)
local sort, desc, offset, limit, needle, customer = ARGV[2], ARGV[3] == '1', tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local ids, total = {}, 0
local function id_of(member)
  if sort == 'createdTime' then return member end
  return string.match(member, '([^%z]*)$')
end
if customer == '' and needle == '' then
  local key = K('devs', sort)
  total = redis.call('ZCARD', key)
  if limit > 0 and offset < total then
    local members
    if desc then members = redis.call('ZREVRANGE', key, offset, offset + limit - 1)
    else members = redis.call('ZRANGE', key, offset, offset + limit - 1) end
    for i, m in ipairs(members) do ids[i] = id_of(m) end
  end
else
  local order = {}
  if customer ~= '' then
    local mine = redis.call('ZRANGE', K('cust', customer, 'devs'), 0, -1)
    if sort == 'createdTime' then
      order = mine
    else
      local keyed = {}
      for _, id in ipairs(mine) do
        local v = redis.call('HGET', K('dev', id), sort == 'createdTime' and 'created' or sort) or ''
        keyed[#keyed + 1] = v .. '\\0' .. id
      end
      table.sort(keyed)
      for i, m in ipairs(keyed) do order[i] = string.match(m, '([^%z]*)$') end
    end
  else
    local members = redis.call('ZRANGE', K('devs', sort), 0, -1)
    for i, m in ipairs(members) do order[i] = id_of(m) end
  end
  local n = #order
  local first, last, step = 1, n, 1
  if desc then first, last, step = n, 1, -1 end
  for i = first, last, step do
    local id = order[i]
    local keep = true
    if needle ~= '' then
      local fold = redis.call('HGET', K('dev', id), 'fold') or ''
      keep = string.find(fold, needle, 1, true) ~= nil
    end
    if keep then
      total = total + 1
      if total > offset and #ids < limit then ids[#ids + 1] = id end
    end
  end
end
local out = {total}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HMGET', K('dev', id), 'id', 'name', 'type', 'label', 'created', 'customer', 'info')
end
return out
"""

DELETE_DEVICE = """
-- ARGV: P, id
local id = ARGV[2]
local d = redis.call('HMGET', K('dev', id), 'name', 'type', 'label', 'customer', 'token')
if not d[1] then return 0 end
local name, typ, label, customer, token = d[1], d[2], d[3] or '', d[4], d[5]
redis.call('HDEL', K('dev', 'name'), name)
redis.call('HDEL', K('token'), token)
redis.call('ZREM', K('devs', 'createdTime'), id)
redis.call('ZREM', K('devs', 'name'), name .. '\\0' .. id)
redis.call('ZREM', K('devs', 'type'), typ .. '\\0' .. id)
redis.call('ZREM', K('devs', 'label'), label .. '\\0' .. id)
if customer then redis.call('ZREM', K('cust', customer, 'devs'), id) end
for _, key in ipairs(redis.call('HKEYS', K('tsl', id))) do
  redis.call('UNLINK', K('tsh', id, key))  -- freed in the background: a series may be large
  redis.call('ZREM', K('series'), id .. '\\0' .. key)
end
redis.call('DEL', K('tsl', id))
for _, scope in ipairs({'CLIENT_SCOPE', 'SHARED_SCOPE', 'SERVER_SCOPE'}) do redis.call('DEL', K('attr', id, scope)) end
for _, rpc in ipairs(redis.call('ZRANGE', K('rpcs', id), 0, -1)) do redis.call('DEL', K('rpc', rpc)) end
redis.call('DEL', K('rpcs', id), K('rpcs', id, 'pending'), K('rpcs', id, 'ids'))
redis.call('SREM', K('rpcs', 'pending'), id)
redis.call('HDEL', K('rpcs', 'counters'), id)
redis.call('DEL', K('claim', id))
redis.call('DEL', K('dev', id))
return 1
"""

ADD_PROFILE = """
-- ARGV: P, id, name, type, key ('' = none), secret ('' = none), created
local id, name, typ, key, secret, created = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('HEXISTS', K('prof', 'name'), name) == 1 then return 'DUPNAME' end
if key ~= '' and redis.call('HEXISTS', K('prof', 'key'), key) == 1 then return 'DUPKEY' end
redis.call('HSET', K('prof', id), 'id', id, 'name', name, 'type', typ, 'created', created)
if key ~= '' then
  redis.call('HSET', K('prof', id), 'key', key)
  redis.call('HSET', K('prof', 'key'), key, id)
end
if secret ~= '' then redis.call('HSET', K('prof', id), 'secret', secret) end
redis.call('HSET', K('prof', 'name'), name, id)
redis.call('ZADD', K('profs'), created, id)
return 'OK'
"""

ENSURE_DEFAULT_PROFILE = """
-- ARGV: P, id, created: the 'default' profile, made once
if redis.call('HEXISTS', K('prof', 'name'), 'default') == 1 then return 0 end
redis.call('HSET', K('prof', ARGV[2]), 'id', ARGV[2], 'name', 'default', 'type', 'DISABLED', 'created', ARGV[3])
redis.call('HSET', K('prof', 'name'), 'default', ARGV[2])
redis.call('ZADD', K('profs'), ARGV[3], ARGV[2])
return 1
"""

UPDATE_PROFILE = """
-- ARGV: P, id, name, type, key ('' = none), secret ('' = none)
local id, name, typ, key, secret = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local old = redis.call('HMGET', K('prof', id), 'name', 'key')
if not old[1] then return 'NOTFOUND' end
local holder = redis.call('HGET', K('prof', 'name'), name)
if holder and holder ~= id then return 'DUPNAME' end
if key ~= '' then
  local owner = redis.call('HGET', K('prof', 'key'), key)
  if owner and owner ~= id then return 'DUPKEY' end
end
redis.call('HDEL', K('prof', 'name'), old[1])
redis.call('HSET', K('prof', 'name'), name, id)
if old[2] then redis.call('HDEL', K('prof', 'key'), old[2]) end
redis.call('HSET', K('prof', id), 'name', name, 'type', typ)
if key ~= '' then
  redis.call('HSET', K('prof', id), 'key', key)
  redis.call('HSET', K('prof', 'key'), key, id)
else
  redis.call('HDEL', K('prof', id), 'key')
end
if secret ~= '' then redis.call('HSET', K('prof', id), 'secret', secret) else redis.call('HDEL', K('prof', id), 'secret') end
if old[1] ~= name then  -- the devices that named it follow (the type index: 'type\\0id')
  for _, member in ipairs(redis.call('ZRANGEBYLEX', K('devs', 'type'), '[' .. old[1] .. '\\0', '(' .. old[1] .. '\\1')) do
    local device = string.sub(member, #old[1] + 2)
    redis.call('HSET', K('dev', device), 'type', name)
    redis.call('ZREM', K('devs', 'type'), member)
    redis.call('ZADD', K('devs', 'type'), 0, name .. '\\0' .. device)
  end
end
return redis.call('HMGET', K('prof', id), 'id', 'name', 'type', 'key', 'secret', 'created')
"""

UPDATE_DEVICE = """
-- ARGV: P, id, name, type, label ('' = none), additional info ('' = none), folded name
local id, name, typ, label, info, fold = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local old = redis.call('HMGET', K('dev', id), 'name', 'type', 'label')
if not old[1] then return 'NOTFOUND' end
local holder = redis.call('HGET', K('dev', 'name'), name)
if holder and holder ~= id then return 'DUPNAME' end
redis.call('HDEL', K('dev', 'name'), old[1])
redis.call('HSET', K('dev', 'name'), name, id)
redis.call('ZREM', K('devs', 'name'), old[1] .. '\\0' .. id)
redis.call('ZREM', K('devs', 'type'), old[2] .. '\\0' .. id)
redis.call('ZREM', K('devs', 'label'), (old[3] or '') .. '\\0' .. id)
redis.call('ZADD', K('devs', 'name'), 0, name .. '\\0' .. id)
redis.call('ZADD', K('devs', 'type'), 0, typ .. '\\0' .. id)
redis.call('ZADD', K('devs', 'label'), 0, label .. '\\0' .. id)
redis.call('HSET', K('dev', id), 'name', name, 'type', typ, 'fold', fold)
if label ~= '' then redis.call('HSET', K('dev', id), 'label', label) else redis.call('HDEL', K('dev', id), 'label') end
if info ~= '' then redis.call('HSET', K('dev', id), 'info', info) else redis.call('HDEL', K('dev', id), 'info') end
return redis.call('HMGET', K('dev', id), 'id', 'name', 'type', 'label', 'created', 'customer', 'info')
"""

PROFILE_BY = """
-- ARGV: P, index ('name' or 'key'), value
local id = redis.call('HGET', K('prof', ARGV[2]), ARGV[3])
if not id then return NIL end
return redis.call('HMGET', K('prof', id), 'id', 'name', 'type', 'key', 'secret', 'created')
"""

PAGE = """
-- ARGV: P, what ('profs' or 'custs'), offset, limit, fields...
local key = K(ARGV[2])
local item = ARGV[2] == 'profs' and 'prof' or 'cust'
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {redis.call('ZCARD', key)}
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGE', key, offset, offset + limit - 1)) do
    out[#out + 1] = redis.call('HMGET', K(item, id), unpack(fields))
  end
end
return out
"""

MARK_PROVISIONED = """
-- ARGV: P, device, 'ts|Sprovisioned': the SERVER_SCOPE attribute provisionState, set unless there is one
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
return redis.call('HSETNX', K('attr', ARGV[2], 'SERVER_SCOPE'), 'provisionState', ARGV[3])
"""

SAVE_TELEMETRY = """
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
        redis.call('ZADD', K('expiring'), tonumber(ts) + save[3], device .. '\\0' .. key .. '\\0' .. ts)
      elseif newest and newest >= tonumber(ts) then  -- a point written again without one keeps
        redis.call('ZREM', K('expiring'), device .. '\\0' .. key .. '\\0' .. ts)
      end
      -- a new series, a point before its newest, or the first after retention emptied it:
      if not newest or newest >= tonumber(ts) or redis.call('ZCARD', history) == 1 then
        redis.call('ZADD', K('series'), 'LT', ts, device .. '\\0' .. key)  -- the score stays <= its oldest
      end
      if not newest or newest <= tonumber(ts) then
        redis.call('HSET', latest, key, member)
      end
    end
  end
end
return out
"""

LATEST = """
-- ARGV: P, device, keys... (none: all)
if #ARGV == 2 then return redis.call('HGETALL', K('tsl', ARGV[2])) end
local out = {}
for i = 3, #ARGV do
  local v = redis.call('HGET', K('tsl', ARGV[2]), ARGV[i])
  if v then out[#out + 1] = ARGV[i]; out[#out + 1] = v end
end
return out
"""

HISTORY = """
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
"""

DELETE_TELEMETRY = """
-- ARGV: P, device, start, end (excluded), delete latest ('1'/'0'), rewrite latest ('1'/'0'), keys...
local device, start, stop = ARGV[2], ARGV[3], ARGV[4]
local delete_latest, rewrite = ARGV[5] == '1', ARGV[6] == '1'
if redis.call('EXISTS', K('dev', device)) == 0 then return 'NOTFOUND' end
for i = 7, #ARGV do
  local key = ARGV[i]
  local history = K('tsh', device, key)
  redis.call('ZREMRANGEBYSCORE', history, start, '(' .. stop)
  local current = redis.call('HGET', K('tsl', device), key)
  local ts = current and tonumber(string.match(current, '^(-?%d+)|'))
  if ts and ts >= tonumber(start) and ts < tonumber(stop) and delete_latest then
    local newest = rewrite and redis.call('ZREVRANGE', history, 0, 0)[1]
    if newest then
      redis.call('HSET', K('tsl', device), key, newest)
    else
      redis.call('HDEL', K('tsl', device), key)
      if redis.call('EXISTS', history) == 0 then redis.call('ZREM', K('series'), device .. '\\0' .. key) end
    end
  end
end
return 'OK'
"""

AGGREGATE = """
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
"""

EXPIRE_TELEMETRY = """
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
    else  -- no history left: the next point saved puts the series back
      redis.call('ZREM', K('series'), series)
    end
  end
end
if deleted >= limit or visited >= limit then return {deleted, 1} end
local budget = limit - deleted
local entries = redis.call('ZRANGEBYSCORE', K('expiring'), '-inf', now, 'LIMIT', 0, budget)
for _, entry in ipairs(entries) do
  local device, key, ts = string.match(entry, '^(.-)%z(.-)%z(-?%d+)$')
  deleted = deleted + redis.call('ZREMRANGEBYSCORE', K('tsh', device, key), ts, ts)
  redis.call('ZREM', K('expiring'), entry)
end
return {deleted, #entries >= budget and 1 or 0}
"""

SAVE_ATTRIBUTES = """
-- ARGV: P, device, scope, then (key, 'ts|encoded value') pairs
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
local key = K('attr', ARGV[2], ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
return 'OK'
"""

GET_ATTRIBUTES = """
-- ARGV: P, device, scope, keys... (none: all)
local key = K('attr', ARGV[2], ARGV[3])
if #ARGV == 3 then return redis.call('HGETALL', key) end
local out = {}
for i = 4, #ARGV do
  local v = redis.call('HGET', key, ARGV[i])
  if v then out[#out + 1] = ARGV[i]; out[#out + 1] = v end
end
return out
"""

DELETE_ATTRIBUTES = """
-- ARGV: P, device, scope, keys...
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
local key, gone = K('attr', ARGV[2], ARGV[3]), {}
for i = 4, #ARGV do
  if redis.call('HDEL', key, ARGV[i]) == 1 then gone[#gone + 1] = ARGV[i] end
end
return gone
"""

RPC_FIELDS = ("id", "device", "request", "method", "params", "oneway", "persistent", "expires", "created",
              "status", "response")
_PENDING = "local PENDING = {QUEUED = true, SENT = true, DELIVERED = true}\n"

ADD_RPC = _PENDING + """
-- ARGV: P, id, device, method, params, oneway, persistent, expires, created, status, response ('\0' = none)
local id, device = ARGV[2], ARGV[3]
if redis.call('EXISTS', K('dev', device)) == 0 then return 'NOTFOUND' end
if redis.call('EXISTS', K('rpc', id)) == 1 then return 'DUPID' end
local n = redis.call('HINCRBY', K('rpcs', 'counters'), device, 1)
redis.call('HSET', K('rpc', id), 'id', id, 'device', device, 'request', n, 'method', ARGV[4], 'params', ARGV[5],
  'oneway', ARGV[6], 'persistent', ARGV[7], 'expires', ARGV[8], 'created', ARGV[9], 'status', ARGV[10])
if ARGV[11] ~= '\0' then redis.call('HSET', K('rpc', id), 'response', ARGV[11]) end
redis.call('ZADD', K('rpcs', device), n, id)
redis.call('HSET', K('rpcs', device, 'ids'), n, id)
if PENDING[ARGV[10]] then
  redis.call('ZADD', K('rpcs', device, 'pending'), n, id)
  redis.call('SADD', K('rpcs', 'pending'), device)
end
return n
"""

GET_RPC = """
-- ARGV: P, id, or P, '', device, request id
local id = ARGV[2]
if id == '' then
  id = redis.call('HGET', K('rpcs', ARGV[3], 'ids'), ARGV[4])
  if not id then return NIL end
end
local r = redis.call('HMGET', K('rpc', id), 'id', 'device', 'request', 'method', 'params', 'oneway', 'persistent',
  'expires', 'created', 'status', 'response')
if not r[1] then return NIL end
return r
"""

SET_RPC_STATUS = _PENDING + """
-- ARGV: P, id, status, response ('\\0' = keep), expected statuses... (none: any)
local id, status, response = ARGV[2], ARGV[3], ARGV[4]
local r = redis.call('HMGET', K('rpc', id), 'status', 'device', 'request')
if not r[1] then return 0 end
if #ARGV > 4 then
  local ok = false
  for i = 5, #ARGV do if ARGV[i] == r[1] then ok = true end end
  if not ok then return 0 end
end
redis.call('HSET', K('rpc', id), 'status', status)
if response ~= '\\0' then redis.call('HSET', K('rpc', id), 'response', response) end
local pending = K('rpcs', r[2], 'pending')
if PENDING[status] then
  redis.call('ZADD', pending, r[3], id)
  redis.call('SADD', K('rpcs', 'pending'), r[2])
else
  redis.call('ZREM', pending, id)
  if redis.call('ZCARD', pending) == 0 then redis.call('SREM', K('rpcs', 'pending'), r[2]) end
end
return 1
"""

PENDING_RPCS = """
-- ARGV: P, device ('' = every device)
local devices = {ARGV[2]}
if ARGV[2] == '' then
  devices = redis.call('SMEMBERS', K('rpcs', 'pending'))
  table.sort(devices)
end
local out = {}
for _, device in ipairs(devices) do
  for _, id in ipairs(redis.call('ZRANGE', K('rpcs', device, 'pending'), 0, -1)) do
    out[#out + 1] = redis.call('HMGET', K('rpc', id), 'id', 'device', 'request', 'method', 'params', 'oneway',
      'persistent', 'expires', 'created', 'status', 'response')
  end
end
return out
"""

LIST_RPCS = """
-- ARGV: P, device, offset, limit (newest first)
local key = K('rpcs', ARGV[2])
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {redis.call('ZCARD', key)}
if limit > 0 then
  for _, id in ipairs(redis.call('ZREVRANGE', key, offset, offset + limit - 1)) do
    out[#out + 1] = redis.call('HMGET', K('rpc', id), 'id', 'device', 'request', 'method', 'params', 'oneway',
      'persistent', 'expires', 'created', 'status', 'response')
  end
end
return out
"""

DELETE_RPC = """
local id = ARGV[2]
local r = redis.call('HMGET', K('rpc', id), 'device', 'request')
if not r[1] then return 0 end
redis.call('DEL', K('rpc', id))
redis.call('ZREM', K('rpcs', r[1]), id)
redis.call('HDEL', K('rpcs', r[1], 'ids'), r[2])
local pending = K('rpcs', r[1], 'pending')
redis.call('ZREM', pending, id)
if redis.call('ZCARD', pending) == 0 then redis.call('SREM', K('rpcs', 'pending'), r[1]) end
return 1
"""

ADD_CUSTOMER = """
-- ARGV: P, id, title, created, key digest
local id, title, created, digest = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', K('cust', 'key'), digest) == 1 then return 'DUPKEY' end
if redis.call('EXISTS', K('cust', id)) == 1 then return 'DUPID' end
if redis.call('HEXISTS', K('cust', 'title'), title) == 1 then return 'DUPNAME' end
redis.call('HSET', K('cust', id), 'id', id, 'title', title, 'created', created)
redis.call('HSET', K('cust', 'key'), digest, id)
redis.call('HSET', K('cust', 'title'), title, id)
redis.call('ZADD', K('custs'), created, id)
return 'OK'
"""

CUSTOMER_BY = """
-- ARGV: P, index ('' for an id, else 'key' or 'title'), value
local id = ARGV[3]
if ARGV[2] ~= '' then
  id = redis.call('HGET', K('cust', ARGV[2]), ARGV[3])
  if not id then return NIL end
end
local c = redis.call('HMGET', K('cust', id), 'id', 'title', 'created')
if not c[1] then return NIL end
return c
"""

SET_DEVICE_CUSTOMER = """
-- ARGV: P, device, customer ('' = free it), expected customer ('' = free)
local device, customer, expect = ARGV[2], ARGV[3], ARGV[4]
local d = redis.call('HMGET', K('dev', device), 'id', 'customer', 'created')
if not d[1] then return 'NOTFOUND' end
if customer ~= '' and redis.call('EXISTS', K('cust', customer)) == 0 then return 'NOCUSTOMER' end
if (d[2] or '') ~= expect then return 0 end
if d[2] then redis.call('ZREM', K('cust', d[2], 'devs'), device) end
if customer == '' then
  redis.call('HDEL', K('dev', device), 'customer')
else
  redis.call('HSET', K('dev', device), 'customer', customer)
  redis.call('ZADD', K('cust', customer, 'devs'), d[3], device)
end
return 1
"""

PUT_CLAIM = """
-- ARGV: P, device, secret, expires, now
if redis.call('EXISTS', K('dev', ARGV[2])) == 0 then return 'NOTFOUND' end
local current = redis.call('HGET', K('claim', ARGV[2]), 'expires')
if current and tonumber(current) > tonumber(ARGV[5]) then return 0 end
redis.call('HSET', K('claim', ARGV[2]), 'secret', ARGV[3], 'expires', ARGV[4])
return 1
"""

GET_CLAIM = """
local c = redis.call('HMGET', K('claim', ARGV[2]), 'secret', 'expires')
if not c[1] then return NIL end
return c
"""

DELETE_CLAIM = """
return redis.call('DEL', K('claim', ARGV[2]))
"""

SCRIPTS = {name: COMMON + source for name, source in globals().copy().items()
           if name.isupper() and isinstance(source, str) and name not in ("COMMON",) and "redis.call" in source}
