-- Holds seat KEYS[1] for ARGV[2] ms for holder ARGV[1] unless someone holds it; the TTL releases
-- it. Each hold is appended to the list KEYS[2] as "seat seconds microseconds" so that the check
-- can prove no seat was held twice at once. 1: held; 0: conflict (the seat is held).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local now = redis.call('TIME')
redis.call('RPUSH', KEYS[2], ARGV[3] .. ' ' .. now[1] .. ' ' .. now[2])
return 1
