-- One failed authentication, atomic. The failure window is fixed and opens
-- at the first failure (the counter's PEXPIRE).
-- KEYS[1]: failure counter, KEYS[2]: block marker.
-- ARGV[1]: threshold, ARGV[2]: window (ms), ARGV[3]: block (ms).
-- Returns {newly blocked (0|1), block time left (ms, 0 when not blocked)}.
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  return {0, left}
end
local n = redis.call('INCR', KEYS[1])
-- Also repairs a counter that somehow lost its expiry.
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if n < tonumber(ARGV[1]) then
  return {0, 0}
end
-- The count starts afresh once the block is over.
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return {1, tonumber(ARGV[3])}
