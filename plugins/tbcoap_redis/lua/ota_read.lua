-- ARGV: P, id, offset, length, chunk size.  The bytes of the range, or 'NOTFOUND' (no package or no data)
local f = redis.call('HMGET', K('ota', ARGV[2]), 'data', 'size')
if not f[1] then return 'NOTFOUND' end
local offset, chunk = tonumber(ARGV[3]), tonumber(ARGV[5])
local last = math.min(offset + tonumber(ARGV[4]), tonumber(f[2])) - 1
local parts = {}
local position = offset
while position <= last do
  local index = math.floor(position / chunk)
  local start = position - index * chunk
  local stop = math.min(chunk - 1, last - index * chunk)
  if redis.call('EXISTS', K('otadata', f[1], index)) == 0 then return 'NOTFOUND' end
  parts[#parts + 1] = redis.call('GETRANGE', K('otadata', f[1], index), start, stop)
  position = index * chunk + stop + 1
end
return {table.concat(parts)}
