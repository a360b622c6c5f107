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
        keyed[#keyed + 1] = v .. '\0' .. id
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
  out[#out + 1] = redis.call('HMGET', K('dev', id), 'id', 'name', 'type', 'label', 'created', 'customer', 'info', 'transport')
end
return out
