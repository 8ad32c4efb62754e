-- GCRA for one key, atomic; the same algorithm as gcra.rs, in microseconds.
-- The server's clock is the only clock, so gateways' skew does not matter.
-- KEYS[1]: the bucket. ARGV[1]: interval, ARGV[2]: tolerance (µs).
-- Returns {allowed (0|1), the key's TAT after this request minus now (µs)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if tat > now + tolerance then tat = now + tolerance end
local new_tat = tat + interval
if new_tat - tolerance > now then
  return {0, tat - now}
end
-- The key disappears when its bucket is full again, i.e. when it is idle.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, new_tat - now}
