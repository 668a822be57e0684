"""The Lua scripts behind :class:`~trioproxy.budget.redis_store.RedisStore`.

One script per operation, so every admission is one round trip and atomic on
the server. Keys (``P`` = the store's prefix)::

    P r:<rid>        hash  lu (lease until), ls (lease s), c (closed 0/1), s (seq), h (holds, JSON)
    P c:<bucket>     string  period counter, µUSD (or tokens): spent + reserved
    P w:<bucket>     zset  window log: member "<rid>|<seq>", score = ts
    P wa:<bucket>    hash  member -> amount, plus _sum (live total) and _win (window s)
    P limits:<team>  hash  daily, monthly: run-time limits in µUSD ('' = none, '-1' = the
                           config's: no override of that field), read by ADMIT
                     and written by UPDATE_LIMITS
    P policy         hash  policy entry name -> JSON (compare-and-set by SWAP_POLICY)
    P epoch          string  the state's epoch: written when the state is initialised or
                     rebuilt; ADMIT and SETTLE refuse ('lost') while it is missing
    P rebuild        string  the rebuild lock (SET NX PX: one rebuilder at a time, leased)
    P counted        set   request ids whose ledger records the last rebuild counted

Floats go back to Python as strings (Redis truncates Lua numbers to integers).
Keys are derived inside the scripts, so this needs a single Redis (no Cluster).
"""

from __future__ import annotations

from trioproxy.store.redis_client import Script

_PRUNE = """
local function prune(prefix, bucket, now, win)
  local wz, wa = prefix .. 'w:' .. bucket, prefix .. 'wa:' .. bucket
  local cutoff = now - win
  while true do
    local old = redis.call('ZRANGEBYSCORE', wz, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local amts = redis.call('HMGET', wa, unpack(old))
    local freed = 0
    for i = 1, #old do freed = freed + (tonumber(amts[i]) or 0) end
    redis.call('HDEL', wa, unpack(old))
    redis.call('ZREM', wz, unpack(old))
    redis.call('HINCRBY', wa, '_sum', -freed)
  end
  return tonumber(redis.call('HGET', wa, '_sum') or '0')
end
"""

# KEYS[1] reservation; ARGV: mode, now, lease_s, prefix, rid, retention_s, n,
# then n x (bucket, amount, limit, window_s or '', ttl_s or '', limit team or '', field)
# A claim naming a team uses that team's stored limit when the store holds one ('-1': the
# claim's own, the config's).
# Replies: {'ok', epoch, then (bucket, usage) for each window claim: its spent + reserved
# after this one, for the rate-limit headers}, {'lost'}, {'closed'},
# {'denied', bucket, used, retry or '', limit}.
ADMIT = Script(
    _PRUNE
    + """
local mode, now, lease_s = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix, rid, keep, n = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local rk = KEYS[1]
local ep = redis.call('GET', prefix .. 'epoch')
if not ep then return {'lost'} end
local seq, holds, ls
if mode == 'reserve' then
  if redis.call('EXISTS', rk) == 1 then return redis.error_reply('DUPLICATE ' .. rid) end
  seq, holds, ls = 0, {}, lease_s
else
  local r = redis.call('HMGET', rk, 'lu', 'c', 's', 'h', 'ls')
  if not r[1] or r[2] == '1' or now > tonumber(r[1]) then return {'closed'} end
  seq, holds, ls = tonumber(r[3]), cjson.decode(r[4]), tonumber(r[5])
end
local claims = {}
for i = 0, n - 1 do
  local o = 8 + i * 7
  local b, amt, lim = ARGV[o], tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
  local win, ttl = tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
  if ARGV[o + 5] ~= '' then
    local stored = redis.call('HMGET', prefix .. 'limits:' .. ARGV[o + 5], 'daily', 'monthly')
    if stored[1] then
      local v = ARGV[o + 6] == 'daily' and stored[1] or stored[2]
      if v == '-1' then -- this field follows the config: the claim's own limit
      elseif v and v ~= '' then lim = tonumber(v) else lim = nil end
    end
  end
  local used
  if win then used = prune(prefix, b, now, win)
  else used = tonumber(redis.call('GET', prefix .. 'c:' .. b) or '0') end
  if lim and used + amt > lim then
    local retry = ''
    if win and amt <= lim then
      local wz, wa = prefix .. 'w:' .. b, prefix .. 'wa:' .. b
      local log = redis.call('ZRANGE', wz, 0, -1, 'WITHSCORES')
      local left = used
      for j = 1, #log, 2 do
        left = left - (tonumber(redis.call('HGET', wa, log[j]) or '0'))
        if left + amt <= lim then
          retry = string.format('%.17g', math.max(0, tonumber(log[j + 1]) + win - now))
          break
        end
      end
    end
    return {'denied', b, string.format('%d', used), retry, string.format('%d', lim)}
  end
  claims[#claims + 1] = {b, amt, win, ttl, used}
end
local reply = {'ok', ep}
for _, c in ipairs(claims) do
  local b, amt, win, ttl = c[1], c[2], c[3], c[4]
  seq = seq + 1
  if win then
    reply[#reply + 1] = b
    reply[#reply + 1] = string.format('%d', c[5] + amt)
    local wz, wa, m = prefix .. 'w:' .. b, prefix .. 'wa:' .. b, rid .. '|' .. seq
    redis.call('ZADD', wz, ARGV[2], m)
    redis.call('HSET', wa, m, amt, '_win', win)
    redis.call('HINCRBY', wa, '_sum', amt)
    redis.call('EXPIRE', wz, ttl)
    redis.call('EXPIRE', wa, ttl)
  else
    local ck = prefix .. 'c:' .. b
    redis.call('INCRBY', ck, amt)
    if ttl then redis.call('EXPIRE', ck, ttl) end
  end
  holds[#holds + 1] = {b, seq, amt, win and 1 or 0}
end
redis.call('HSET', rk, 'lu', string.format('%.17g', now + ls), 'ls', string.format('%.17g', ls),
  'c', '0', 's', seq, 'h', cjson.encode(holds))
redis.call('EXPIRE', rk, math.ceil(ls + keep))
return reply
"""
)

# KEYS[1] reservation; ARGV: now, prefix, rid, then pairs (bucket, actual)
# 'lost' without an epoch; 'missing' (and the epoch) for a reservation this state never saw
SETTLE = Script(
    """
local now, prefix, rid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local rk = KEYS[1]
local ep = redis.call('GET', prefix .. 'epoch')
if not ep then return {'lost'} end
local r = redis.call('HMGET', rk, 'lu', 'c', 'h')
if not r[1] then return {'missing', ep} end
if r[2] == '1' then return {'done', ep} end
redis.call('HSET', rk, 'c', '1')
if now > tonumber(r[1]) then return {'done', ep} end
local actual = {}
for i = 4, #ARGV, 2 do actual[ARGV[i]] = tonumber(ARGV[i + 1]) end
local groups, order = {}, {}
for _, h in ipairs(cjson.decode(r[3])) do
  if not groups[h[1]] then groups[h[1]] = {}; order[#order + 1] = h[1] end
  table.insert(groups[h[1]], h)
end
for _, b in ipairs(order) do
  local g, left = groups[b], actual[b] or 0
  for i, h in ipairs(g) do
    local take = math.min(h[3], math.max(0, left))
    left = left - take
    if i == #g and left > 0 then take = take + left end
    local delta = take - h[3]
    if h[4] == 1 then
      local wa, m = prefix .. 'wa:' .. b, rid .. '|' .. h[2]
      if redis.call('HEXISTS', wa, m) == 1 then
        redis.call('HSET', wa, m, take)
        redis.call('HINCRBY', wa, '_sum', delta)
      end
    elseif delta ~= 0 and redis.call('EXISTS', prefix .. 'c:' .. b) == 1 then
      redis.call('INCRBY', prefix .. 'c:' .. b, delta)
    end
  end
end
return {'done', ep}
"""
)

# ARGV: prefix, bucket, now
USAGE = Script(
    _PRUNE
    + """
local prefix, b, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local win = redis.call('HGET', prefix .. 'wa:' .. b, '_win')
if win then return prune(prefix, b, now, tonumber(win)) end
return tonumber(redis.call('GET', prefix .. 'c:' .. b) or '0')
"""
)

# Writes rebuilt or replayed state. ARGV: mode ('rebuild' | 'replay'), prefix, epoch, token,
# final ('1' | '0'), now, counted_ttl_s, then four sections, each a count and its items:
#   counters      (bucket, amount, ttl_s)                  SET: rebuild only, idempotent
#   window items  (bucket, member, ts, amount, window_s, ttl_s)      idempotent per member
#   counted ids   (rid)                                    SADD to P counted
#   reservations  (rid, closed 0/1, lease_until, lease_s, keep_s, n,
#                  n x (bucket, amount, window_s or '', ttl_s or '', ts))
# A reservation is skipped when the state already holds it or the rebuild counted its
# request from the ledger (the ledger's amount wins). 'rebuild' needs the lock's token and
# no epoch, and with final = '1' writes the epoch and frees the lock; 'replay' needs the
# epoch to be ``epoch``. Replies: {'ok', written}, {'nolock'}, {'exists'}, {'stale', ep}.
# A replay of one closed reservation is also how a dead process's request the state never
# held is charged (``RedisStore.charge_unheld``): once, and not when the rebuild counted it.
RESTORE = Script(
    """
local mode, prefix, epoch, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local final, now, counted_ttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local ek, ck = prefix .. 'epoch', prefix .. 'counted'
if mode == 'rebuild' then
  if redis.call('GET', prefix .. 'rebuild') ~= token then return {'nolock'} end
  if redis.call('EXISTS', ek) == 1 then return {'exists'} end
else
  local ep = redis.call('GET', ek)
  if ep ~= epoch then return {'stale', ep or ''} end
end
local function add_window(b, m, ts, amt, win, ttl)
  local wz, wa = prefix .. 'w:' .. b, prefix .. 'wa:' .. b
  local old = tonumber(redis.call('HGET', wa, m) or '0')
  redis.call('ZADD', wz, ts, m)
  redis.call('HSET', wa, m, amt, '_win', win)
  redis.call('HINCRBY', wa, '_sum', amt - old)
  redis.call('EXPIRE', wz, ttl)
  redis.call('EXPIRE', wa, ttl)
end
local i = 8
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  if mode == 'rebuild' then
    local k = prefix .. 'c:' .. ARGV[i]
    redis.call('SET', k, ARGV[i + 1])
    redis.call('EXPIRE', k, ARGV[i + 2])
  end
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  add_window(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5])
  i = i + 6
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('SADD', ck, ARGV[i])
  i = i + 1
end
if n > 0 then redis.call('EXPIRE', ck, counted_ttl) end
n = tonumber(ARGV[i]); i = i + 1
local written = 0
for _ = 1, n do
  local rid, closed, lu, ls, keep = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local nh = tonumber(ARGV[i + 5])
  local rk = prefix .. 'r:' .. rid
  -- counted by the ledger: skip. A rebuild SETs the counters afresh, so it writes every
  -- held reservation again (a record left by an earlier, failed attempt is not counted
  -- in them); a replay adds to live counters: a record already there is counted.
  local skip = redis.call('SISMEMBER', ck, rid) == 1
    or (mode ~= 'rebuild' and redis.call('EXISTS', rk) == 1)
  i = i + 6
  local holds = {}
  for seq = 1, nh do
    local b, amt, win, ttl, ts = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    i = i + 5
    if not skip then
      if win ~= '' then
        add_window(b, rid .. '|' .. seq, ts, amt, win, tonumber(ttl))
      else
        local k = prefix .. 'c:' .. b
        redis.call('INCRBY', k, amt)
        if ttl ~= '' then redis.call('EXPIRE', k, ttl) end
      end
      holds[#holds + 1] = {b, seq, amt, win ~= '' and 1 or 0}
    end
  end
  if not skip then
    redis.call('HSET', rk, 'lu', lu, 'ls', ls, 'c', closed, 's', nh,
      'h', #holds > 0 and cjson.encode(holds) or '[]')
    redis.call('EXPIRE', rk, math.max(1, math.ceil(tonumber(lu) - now + tonumber(keep))))
    written = written + 1
  end
end
if mode == 'rebuild' and final == '1' then
  redis.call('SET', ek, epoch)
  redis.call('DEL', prefix .. 'rebuild')
end
return {'ok', written}
"""
)

# An edit of a team's limits: only the fields it names, the other as stored (or the default
# for a team without stored limits), nothing written when nothing changes. KEYS[1]: P
# limits:<team>. ARGV: default daily, default monthly ('' = none), then (field, value) pairs,
# field 'daily' or 'monthly'. Reply: {old daily, old monthly, new daily, new monthly}.
UPDATE_LIMITS = Script(
    """
local cur = redis.call('HMGET', KEYS[1], 'daily', 'monthly')
local old = {ARGV[1], ARGV[2]}
if cur[1] then old = {cur[1], cur[2] or ''} end
local new = {old[1], old[2]}
for i = 3, #ARGV, 2 do
  if ARGV[i] == 'daily' then new[1] = ARGV[i + 1]
  elseif ARGV[i] == 'monthly' then new[2] = ARGV[i + 1]
  else return redis.error_reply('BADFIELD ' .. ARGV[i]) end
end
if new[1] ~= old[1] or new[2] ~= old[2] then
  redis.call('HSET', KEYS[1], 'daily', new[1], 'monthly', new[2])
end
return {old[1], old[2], new[1], new[2]}
"""
)

# Compare-and-set of one policy entry. KEYS[1]: P policy. ARGV: name, '1' and the value
# expected, or '0' and '' (no entry expected), the new value. Written only if the entry holds
# what is expected. Reply: {0} (there was no entry) or {1, value held}.
SWAP_POLICY = Script(
    """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if (held == false and ARGV[2] == '0') or (held ~= false and ARGV[2] == '1' and held == ARGV[3])
then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
end
if held == false then return {0} end
return {1, held}
"""
)

__all__ = ["ADMIT", "RESTORE", "SETTLE", "SWAP_POLICY", "UPDATE_LIMITS", "USAGE"]
