-- ARGV: P, hash ('tsl' or 'attr'), device, scope ('' for telemetry), limit, offset
-- Returns {total, keys...}: a page of the hash's fields in byte order (a device's keys are capped
-- by --max-device-keys, so sorting them inside Redis stays short).
local key = ARGV[4] == '' and K(ARGV[2], ARGV[3]) or K(ARGV[2], ARGV[3], ARGV[4])
local fields = redis.call('HKEYS', key)
table.sort(fields)
local out = {#fields}
local limit, offset = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = offset + 1, math.min(#fields, offset + limit) do out[#out + 1] = fields[i] end
return out
