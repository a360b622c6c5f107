-- Put before every script of the Redis store: ARGV[1] is the key prefix P, K('dev', id) builds
-- the key P:dev:id, NIL is what a script returns for "none" (a nil reply).
local P = ARGV[1]
local function K(...) return P .. ':' .. table.concat({...}, ':') end
local NIL = false
