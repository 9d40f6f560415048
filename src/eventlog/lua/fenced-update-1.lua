-- A fenced update of one state hash. KEYS: 1 the hash. ARGV: 1 the fence
-- field, 2 the writer's fencing token, 3 how many fields to delete, then the
-- fields to delete, then field/value pairs to set.
-- Applied only when the token is at least the one stored in the fence field
-- (absent: 0), which it becomes in the same write; a lower token (a former
-- lease holder) changes nothing. Returns the number of deleted fields that
-- existed, or -1 when refused.
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
local token = tonumber(ARGV[2])
if token < stored then
  return -1
end
local ndel = tonumber(ARGV[3])
local deleted = 0
-- in chunks: unpack() of thousands of arguments overflows Lua's stack
local CHUNK = 500
local i = 4
while i <= 3 + ndel do
  local j = math.min(i + CHUNK - 1, 3 + ndel)
  deleted = deleted + redis.call('HDEL', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
i = 4 + ndel
while i <= #ARGV do
  local j = math.min(i + 2 * CHUNK - 1, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
return deleted
