-- ARGV: P, package id, offset, limit.  {total, device fields...}: the devices whose package of its type
-- is this one (their own, or their profile's when they have none), by creation
local package = ARGV[2]
local typ = redis.call('HGET', K('ota', package), 'type')
if not typ then return {0} end
local found = {}
for _, entity in ipairs(redis.call('SMEMBERS', K('ota', package, 'assigned'))) do
  local created = redis.call('HGET', K('dev', entity), 'created')
  if created then
    found[#found + 1] = {tonumber(created), entity}
  else
    local name = redis.call('HGET', K('prof', entity), 'name')
    if name then
      for _, member in ipairs(redis.call('ZRANGEBYLEX', K('devs', 'type'), '[' .. name .. '\0', '(' .. name .. '\1')) do
        local id = string.sub(member, #name + 2)
        if redis.call('HEXISTS', K('ota', 'assign', id), typ) == 0 then
          found[#found + 1] = {tonumber(redis.call('HGET', K('dev', id), 'created')), id}
        end
      end
    end
  end
end
table.sort(found, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
local out = {#found}
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = offset + 1, math.min(#found, offset + limit) do
  out[#out + 1] = redis.call('HMGET', K('dev', found[i][2]), 'id', 'name', 'type', 'label', 'created', 'customer', 'info')
end
return out
