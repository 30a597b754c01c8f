-- Creates ARGV[1] accounts KEYS[1]0 .. with ARGV[2] each, and KEYS[2] with ARGV[3].
for i = 0, tonumber(ARGV[1]) - 1 do redis.call('SET', KEYS[1] .. i, ARGV[2]) end
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[3]) end
return tonumber(ARGV[1])
