-- redis_journey.lua: the journeys and rules of tests/bench/bench.lua as one Redis
-- server-side script, the Redis + Lua peer of `make bench` (tests/bench/table.sh).
-- Loaded with SCRIPT LOAD and called once per event with EVALSHA (pipelined) by
-- redis_driver.c:
--
--   EVALSHA sha 0 TYPE ID EVENT TS_MS MESSAGE_ID [KEY VALUE]...
--
-- TYPE track|identify|page|..., ID the userId (or the anonymousId when there is none),
-- EVENT the track event's name, TS_MS the event time in milliseconds, then the event's
-- top-level properties (track) or traits (identify) as key/value strings.
-- Returns the number of actions decided (ctx:send in bench_hooks.lua) by this call,
-- timers that came due included.
--
-- The same semantics as the engine on its virtual clock (README "Processing semantics"):
-- duplicates dropped by messageId; identify merges traits into the profile; the clock is
-- the latest event time seen, and timers due at or before it fire first, in due order
-- (ties in the order scheduled), from one sorted set keyed by due time; a timer belongs
-- to one stage entry (a generation number) and is dropped once the person left it;
-- journeys in definition order, then rules; exit, then goal, then the stage's triggers;
-- reentry "never"; the cart journey is keyed by cart_id. Decided actions go to the list
-- `outbox` as JSON. Not modelled, because this workload never exercises them: alias and
-- anonymous-profile merging (anonymous events are page views only), events without
-- cart_id reaching every cart, late events re-entering stages in the past.

local DAY, HOUR = 86400000, 3600000
local typ, uid, name, ts, mid = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local props = {}
for i = 6, #ARGV - 1, 2 do props[ARGV[i]] = ARGV[i + 1] end

if redis.call("SADD", "seen", mid) == 0 then return 0 end -- duplicate

local actions = 0
local clock = tonumber(redis.call("GET", "clock") or "0")
if ts > clock then
  clock = ts
  redis.call("SET", "clock", clock)
end

-- ------------------------------------------------------------ effects
local function ukey(id) return "u:" .. id end
local function trait(id, k) return redis.call("HGET", ukey(id), "t." .. k) end

local function send(id, journey, stage, channel, payload, at)
  actions = actions + 1
  redis.call("RPUSH", "outbox", cjson.encode({ time = at, user = id, journey = journey, stage = stage,
                                               channel = channel, payload = payload }))
end
local function score(id, d) return redis.call("HINCRBY", ukey(id), "score", d) end
local function seg_add(id, s) redis.call("SADD", "s:" .. id, s) end
local function seg_remove(id, s) redis.call("SREM", "s:" .. id, s) end

local function schedule(due, what)
  local seq = redis.call("INCR", "timer_seq")
  redis.call("ZADD", "timers", due, string.format("%012d|%s", seq, what))
end

-- ------------------------------------------------------------ hooks (bench_hooks.lua)
local T, L, C = "trial_onboarding", "lead_scoring", "cart"

-- trial: stages signed_up, activated, dormant; "left" once it ended (reentry never)
local function enter_trial(id, stage, at)
  local g = redis.call("HINCRBY", ukey(id), "tg", 1)
  redis.call("HSET", ukey(id), "trial", stage)
  if stage == "signed_up" then
    schedule(at + 2 * DAY, table.concat({ "T", g, "nudge", id }, "|"))
    schedule(at + 5 * DAY, table.concat({ "T", g, "stalled", id }, "|"))
    send(id, T, stage, "email", { template = "welcome", to = trait(id, "email") }, at)
  elseif stage == "activated" then
    schedule(at + 7 * DAY, table.concat({ "T", g, "upgrade", id }, "|"))
    seg_remove(id, "at-risk")
    send(id, T, stage, "crm", { user = id, lifecycle = "activated" }, at)
  elseif stage == "dormant" then
    schedule(at + 9 * DAY, table.concat({ "T", g, "exit", id }, "|"))
  end
end

local function enter_lead(id, stage, at)
  local g = redis.call("HINCRBY", ukey(id), "lg", 1)
  redis.call("HSET", ukey(id), "lead", stage)
  if stage == "lead" then
    schedule(at + 30 * DAY, table.concat({ "L", g, "exit", id }, "|"))
    score(id, 20)
    send(id, L, stage, "crm", { user = id, lifecycle = "lead",
                                company_size = tonumber(trait(id, "company_size")) }, at)
  else -- sales_qualified
    schedule(at + 14 * DAY, table.concat({ "L", g, "exit", id }, "|"))
    send(id, L, stage, "team", { text = "new SQL: " .. id .. " at " .. tostring(trait(id, "company")) }, at)
    send(id, L, stage, "crm", { user = id, lifecycle = "sql" }, at)
    seg_add(id, "sql")
  end
end

local function cart_key(id, cart) return "c:" .. id .. ":" .. cart end

local function enter_cart(id, cart, stage, at)
  local ck = cart_key(id, cart)
  local g = redis.call("HINCRBY", ck, "g", 1)
  redis.call("HSET", ck, "st", stage)
  if stage == "open" then
    schedule(at + HOUR, table.concat({ "C", g, "reminder", id, cart }, "|"))
    schedule(at + 24 * HOUR, table.concat({ "C", g, "last_call", id, cart }, "|"))
    redis.call("HSET", ukey(id), "t.last_cart", cart)
  else -- abandoned
    schedule(at + 7 * DAY, table.concat({ "C", g, "exit", id, cart }, "|"))
    seg_add(id, "cart-abandoner")
  end
end

-- ------------------------------------------------------------ timers
local function fire(member, due)
  local _, j, g, what, id, cart = string.match(member, "^(%d+)|(%a)|(%d+)|([%a_]+)|([^|]+)|?(.*)$")
  g = tonumber(g)
  if j == "T" then
    local st = redis.call("HMGET", ukey(id), "trial", "tg")
    if st[1] == "left" or tonumber(st[2]) ~= g then return end -- that stage entry is over
    if what == "nudge" then
      send(id, T, st[1], "email", { template = "first-project", to = trait(id, "email") }, due)
    elseif what == "stalled" then
      send(id, T, st[1], "team", { text = "trial stalled: " .. id }, due)
      seg_add(id, "at-risk")
      enter_trial(id, "dormant", due)
    elseif what == "upgrade" then
      send(id, T, st[1], "email", { template = "upgrade-offer", to = trait(id, "email") }, due)
    else -- exit
      redis.call("HSET", ukey(id), "trial", "left")
    end
  elseif j == "L" then
    local st = redis.call("HMGET", ukey(id), "lead", "lg")
    if st[1] == "left" or tonumber(st[2]) ~= g then return end
    redis.call("HSET", ukey(id), "lead", "left")
  else
    local ck = cart_key(id, cart)
    local st = redis.call("HMGET", ck, "st", "g")
    if st[1] == "left" or tonumber(st[2]) ~= g then return end
    if what == "reminder" then
      send(id, C, st[1], "email", { template = "cart-reminder", to = trait(id, "email"), cart = cart }, due)
    elseif what == "last_call" then
      send(id, C, st[1], "email", { template = "cart-last-call", to = trait(id, "email"), cart = cart }, due)
      enter_cart(id, cart, "abandoned", due)
    else
      redis.call("HSET", ck, "st", "left")
    end
  end
end

while true do
  local due = redis.call("ZRANGEBYSCORE", "timers", "-inf", clock, "WITHSCORES", "LIMIT", 0, 32)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    redis.call("ZREM", "timers", due[i])
    fire(due[i], tonumber(due[i + 1]))
  end
end

-- ------------------------------------------------------------ the event
local function active(st) return st and st ~= "left" end
local LEAD_ROLES = { founder = true, cto = true, vp_engineering = true, head_of_product = true }
local PREMIUM = { export = true, api = true, sso = true, audit_log = true }

if typ == "identify" then
  local kv = {}
  for k, v in pairs(props) do
    kv[#kv + 1] = "t." .. k
    kv[#kv + 1] = v
  end
  if #kv > 0 then redis.call("HSET", ukey(uid), unpack(kv)) end
  -- lead_scoring entry: the identify's own traits
  if LEAD_ROLES[props.role or ""] and (tonumber(props.company_size) or 0) >= 50 then
    if not redis.call("HGET", ukey(uid), "lead") then enter_lead(uid, "lead", ts) end
  end
  return actions
end
if typ ~= "track" then return actions end

-- trial_onboarding
if name == "Signed Up" or name == "Subscription Started" or name == "Account Deleted" or
   name == "Project Created" or name == "Teammate Invited" then
  local tr = redis.call("HGET", ukey(uid), "trial")
  if active(tr) then
    if name == "Account Deleted" or name == "Subscription Started" then
      redis.call("HSET", ukey(uid), "trial", "left")
    elseif name == "Project Created" and (tr == "signed_up" or tr == "dormant") then
      enter_trial(uid, "activated", ts)
    elseif name == "Teammate Invited" and tr == "activated" then
      score(uid, 10)
    end
  elseif not tr and name == "Signed Up" and props.plan == "trial" then
    enter_trial(uid, "signed_up", ts)
  end
end

-- lead_scoring
if name == "Account Deleted" or name == "Whitepaper Downloaded" or name == "Demo Requested" then
  local ld = redis.call("HGET", ukey(uid), "lead")
  if active(ld) then
    if name == "Account Deleted" then
      redis.call("HSET", ukey(uid), "lead", "left")
    elseif ld == "lead" and name == "Whitepaper Downloaded" then
      if score(uid, 15) >= 50 then seg_add(uid, "hot-lead") end
    elseif ld == "lead" and name == "Demo Requested" then
      enter_lead(uid, "sales_qualified", ts)
    end
  end
end

-- cart, one instance per cart_id
if (name == "Product Added" or name == "Order Completed" or name == "Cart Cleared") and props.cart_id then
  local cart = props.cart_id
  local ck = cart_key(uid, cart)
  local st = redis.call("HGET", ck, "st")
  if active(st) then
    if name == "Cart Cleared" then
      redis.call("HSET", ck, "st", "left")
    elseif name == "Order Completed" then
      seg_remove(uid, "cart-abandoner")
      send(uid, C, st, "crm", { user = uid, event = "order", cart = cart, revenue = tonumber(props.revenue) }, ts)
      redis.call("HSET", ck, "st", "left")
    elseif name == "Product Added" and st == "open" then
      score(uid, 1)
    end
  elseif not st and name == "Product Added" and (tonumber(props.price) or 0) > 0 and
         (tonumber(props.quantity) or 0) >= 1 then
    enter_cart(uid, cart, "open", ts)
  end
end

-- rules
if name == "Pricing Viewed" then
  score(uid, 5)
elseif name == "Feature Used" then
  if PREMIUM[props.feature or ""] and trait(uid, "plan") == "trial" then
    score(uid, 3)
    seg_add(uid, "wants-" .. props.feature)
  end
elseif name == "Product Viewed" then
  if (tonumber(props.price) or 0) >= 500 then
    send(uid, nil, nil, "crm", { user = uid, product = props.product_id, price = tonumber(props.price) }, ts)
  end
end
return actions
