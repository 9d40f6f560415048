-- Removes entries older than a cutoff and records the last removed id (see append-6.lua).
-- KEYS: 1 stream, 2 trim marks. ARGV: 1 cutoff stream id (entries below it go).
local last = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #last == 0 then return 0 end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('HSET', KEYS[2], KEYS[1], last[1][1])
return removed
