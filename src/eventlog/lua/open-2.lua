-- Finds (and for a new log creates) the log's meta hash; returns where it is: 1 layout 1's
-- `{log}:partitions`, 2 layout 2's `{log}:meta`, 0 none (a log from before the count was stored).
-- A layout-2 log keeps a string (the fence) at `{log}:partitions`, the key builds from before
-- layout 2 read as a hash first thing at start: they stop on WRONGTYPE instead of writing under
-- layout 1's names. A layout-2 meta hash still at `{log}:partitions` (written by the first builds
-- of layout 2) moves to `{log}:meta` and the fence takes its place. A replica of an older build
-- may have created a layout-1 log meanwhile: its hash stays.
-- KEYS: 1 `{log}:partitions`, 2 `{log}:meta` (one hash tag: one slot)
-- ARGV: 1 create ('1': a new log may be created here), 2 the count, 3 the write format,
--       4 the key layout, 5 the key group count, 6 the fence
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[6]) end
  return 2
end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'hash' then
  if tonumber(redis.call('HGET', KEYS[1], 'layout') or '1') >= 2 then
    redis.call('RENAME', KEYS[1], KEYS[2])
    redis.call('SET', KEYS[1], ARGV[6])
    return 2
  end
  return 1
end
if kind ~= 'none' then
  return redis.error_reply('SG_ERR_PARTITIONS_MISMATCH ' .. KEYS[1] .. ' is a ' .. kind .. ' but ' .. KEYS[2] .. ' is missing: the log meta was changed by hand')
end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[2], 'partitions', ARGV[2], 'format', ARGV[3], 'layout', ARGV[4], 'groups', ARGV[5])
  redis.call('SET', KEYS[1], ARGV[6])
  return 2
end
return 0
