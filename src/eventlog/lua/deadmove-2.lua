-- Replays or drops dead letters. KEYS: 1 dead-letter stream, 2 replay stream.
-- ARGV: 1 'replay' | 'drop', 2.. dead-letter ids. Returns how many existed.
local moved = 0
for i = 2, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #found == 1 then
    if ARGV[1] == 'replay' then
      redis.call('XADD', KEYS[2], '*', unpack(found[1][2]))
    end
    redis.call('XDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
