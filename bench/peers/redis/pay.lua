-- An idempotent payment: KEYS[1] is the idempotency record, KEYS[2] pays ARGV[1] to KEYS[3].
-- The first request with a key records its outcome with its content; a repeat returns 10 plus
-- the recorded outcome (a replay, never applied twice), or 20 if the content differs.
-- 1: applied; 0: refused (insufficient balance); 3: an account does not exist.
local content = KEYS[2] .. ' ' .. KEYS[3] .. ' ' .. ARGV[1]
local previous = redis.call('GET', KEYS[1])
if previous then
    if string.sub(previous, 3) ~= content then return 20 end
    return 10 + tonumber(string.sub(previous, 1, 1))
end
local amount = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[2]))
local outcome = 1
if balance == nil or redis.call('EXISTS', KEYS[3]) == 0 then
    outcome = 3
elseif balance < amount then
    outcome = 0
else
    redis.call('DECRBY', KEYS[2], amount)
    redis.call('INCRBY', KEYS[3], amount)
end
redis.call('SET', KEYS[1], outcome .. ' ' .. content)
return outcome
