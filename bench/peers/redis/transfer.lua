-- Moves ARGV[1] from KEYS[1] to KEYS[2] if KEYS[1] has it; atomic because Redis runs one script
-- at a time. 1: moved; 0: refused (insufficient balance); 3: an account does not exist.
local amount = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[1]))
if balance == nil or redis.call('EXISTS', KEYS[2]) == 0 then return 3 end
if balance < amount then return 0 end
redis.call('DECRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
return 1
