-- ARGV: P, hash ('tsl' or 'attr'), device, scope ('' for telemetry), keys...
-- Returns {count, present keys...}: the hash's size (HLEN, O(1)) and which of the keys it holds.
local key = ARGV[4] == '' and K(ARGV[2], ARGV[3]) or K(ARGV[2], ARGV[3], ARGV[4])
local out = {redis.call('HLEN', key)}
for i = 5, #ARGV do
  if redis.call('HEXISTS', key, ARGV[i]) == 1 then out[#out + 1] = ARGV[i] end
end
return out
