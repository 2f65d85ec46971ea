#!/bin/sh
# Shards decide what one engine decides: the same events (a few thousand, for 300 people,
# generated here from a fixed seed) sent to `journeyd serve` with JOURNEYD_SHARDS=1 and
# with JOURNEYD_SHARDS=3 give the same outbox, the same profiles (traits, score,
# segments, journeys), the same journey counts and funnels and the same processed count.
# The events cover journey entry, stage moves, goal and exit, rules that change score and
# segments, traits from identify and `where` predicates on them, anonymous visitors who
# gather score, segments and a journey of their own before an identify links them to a
# user (most of these links cross shards with 3), alias calls, events after the link that
# carry only the anonymous id, and resent duplicates. No event has a timestamp and every
# delay is days long, so nothing depends on the real clock the daemon runs on.
# Then the 3-shard daemon restarts on its data directory (a start with 2 shards must be
# refused, naming the count), and an anonymous-only event for an id linked across shards
# must still reach its user (the front's links come back from the stores).
set -u
B=${1:-build}/journeyd
T=$(mktemp -d)
PID=""
stop_daemon() { # SIGTERM, then at most 15 s for it to exit
  [ -n "$PID" ] || return 0
  kill -TERM "$PID" 2>/dev/null
  i=0
  while kill -0 "$PID" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 150 ]; then
      kill -KILL "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""
      return 1
    fi
    sleep 0.1
  done
  wait "$PID"; rc=$?
  PID=""
  return $rc
}
cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
fail() { echo "shards: $*"; exit 1; }
. "$(dirname "$0")/../free_port.sh"
PORT=$(free_port)
URL=http://127.0.0.1:$PORT

cat >"$T/journeyd.lua" <<'LUA'
-- based on examples/trial-onboarding, with rules and journeys that read score, segments
-- and traits, so a profile not folded on its user's shard shows in the decisions
local j = require "journey"
j.config { delivery = "off", checkpoint_interval = "200ms" }
j.channel "email" { type = "webhook", url = "http://127.0.0.1:9/email" }
j.channel "team"  { type = "slack",   url = "http://127.0.0.1:9/slack" }
j.channel "crm"   { type = "webhook", url = "http://127.0.0.1:9/crm" }

local function segs(ctx)
  local s = {}
  for name in pairs(ctx.user.segments) do s[#s + 1] = name end
  table.sort(s)
  return table.concat(s, ",")
end
local function profile(ctx, t)
  t.score = ctx.user.score
  t.segments = segs(ctx)
  t.to = ctx.user.traits.email
  t.tier = ctx.user.traits.plan_tier
  return t
end

-- rules: score and segments, also for anonymous visitors
j.page("Docs", function(ctx) ctx:score(1); ctx:segment_add "reader" end)
j.on("Pricing Viewed", function(ctx)
  ctx:score(5)
  if ctx.user.score >= 15 then ctx:segment_add "hot" end
end)
j.on("Webinar Joined", function(ctx) ctx:score(3); ctx:segment_add "webinar" end)
j.identify({ ["company.size"] = { gte = 100 } }, function(ctx)
  ctx:segment_add "big"
  ctx:send("crm", profile(ctx, { kind = "big-account", user = ctx.user.id }))
end)
j.identify({ plan_tier = "free", ["user.segments"] = "hot" }, function(ctx)
  ctx:send("email", profile(ctx, { template = "upgrade-hot" }))
end)
j.on("Demo Requested", { ["user.segments"] = "hot" }, function(ctx)
  ctx:send("crm", profile(ctx, { kind = "hot-demo", user = ctx.user.id }))
end)
j.on("Demo Requested", { ["user.traits.plan_tier"] = "enterprise" }, function(ctx)
  ctx:send("team", { text = "enterprise demo: " .. ctx.user.id .. " score " .. ctx.user.score })
end)
j.on("Demo Requested", { ["user.score"] = { lt = 5 } }, function(ctx) ctx:segment_add "cold-demo" end)

j.journey "trial_onboarding" {
  entry   = j.on("Signed Up", { plan = "trial" }),
  goal    = j.on("Subscription Started"),
  exit    = j.on("Account Deleted"),
  reentry = "never",
  j.stage "signed_up" {
    enter = function(ctx) ctx:send("email", profile(ctx, { template = "welcome" })) end,
    j.on("Project Created"):go "activated",
    j.after("2d", function(ctx) ctx:send("email", profile(ctx, { template = "first-project" })) end),
    j.after("5d", function(ctx) ctx:segment_add "at-risk" end):go "dormant",
  },
  j.stage "activated" {
    enter = function(ctx)
      ctx:segment_remove "reader"
      ctx:send("crm", profile(ctx, { user = ctx.user.id, lifecycle = "activated" }))
    end,
    j.on("Teammate Invited", { ["user.score"] = { gte = 20 } }):go("expanding", function(ctx) ctx:score(10) end),
    j.on("Teammate Invited", function(ctx) ctx:score(10) end),
    j.after("7d", function(ctx) ctx:send("email", profile(ctx, { template = "upgrade-offer" })) end),
  },
  j.stage "expanding" {
    enter = function(ctx) ctx:send("team", { text = "expanding: " .. ctx.user.id .. " " .. segs(ctx) }) end,
  },
  j.stage "dormant" {
    j.on("Project Created"):go "activated",
    j.after("9d"):exit(),
  },
}

-- entered on traits and on the score gathered before the identify
j.journey "enterprise" {
  entry = j.on("Pricing Viewed", { ["user.traits.plan_tier"] = "enterprise", ["user.score"] = { gte = 10 } }),
  goal  = j.on("Subscription Started"),
  exit  = { j.on("Account Deleted"), j.identify({ plan_tier = { ne = "enterprise" } }) },
  j.stage "interested" {
    enter = function(ctx) ctx:send("email", profile(ctx, { template = "enterprise-intro" })) end,
    j.on("Demo Requested"):go "demo",
    j.after("3d"):exit(),
  },
  j.stage "demo" {
    enter = function(ctx) ctx:send("team", { text = "enterprise demo booked: " .. ctx.user.id }) end,
    j.on("Project Created", { ["user.segments"] = "webinar" }):go("engaged", function(ctx) ctx:score(2) end),
  },
  j.stage "engaged" {},
}

-- anonymous visitors: the instance stays with the visitor's profile after a link
j.journey "visitor" {
  entry = j.page("Pricing"),
  j.stage "browsing" {
    enter = function(ctx) ctx:send("crm", { visitor = ctx.user.id }) end,
    j.on("Pricing Viewed"):go "comparing",
  },
  j.stage "comparing" {
    j.on("Webinar Joined"):go("engaged", function(ctx) ctx:segment_add "visitor-engaged" end),
  },
  j.stage "engaged" {},
}
LUA
$B check "$T/journeyd.lua" >/dev/null 2>"$T/check.err" || fail "check: $(cat "$T/check.err")"

cat >"$T/h.py" <<'PY'
import json, os, random, sys, http.client

def fnv(s, n):  # engine/shard.c jd_shard_of
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h % n

def gen(out):
    rng = random.Random(20261122)
    people, ids, links = [], [], []
    for i in range(300):
        uid = "u%03d" % i
        ids.append(uid)
        seq = []
        anon = "anon-%03d-%d" % (i, rng.randrange(10**6)) if rng.random() < 0.7 else None
        if anon:
            ids.append(anon)
            for _ in range(rng.randint(1, 4)):
                seq.append(rng.choice([
                    {"type": "page", "name": "Docs"},
                    {"type": "page", "name": "Pricing"},
                    {"type": "track", "event": "Pricing Viewed"},
                    {"type": "track", "event": "Pricing Viewed"},
                    {"type": "track", "event": "Webinar Joined"},
                ]) | {"anonymousId": anon})
        tier = rng.choice(["free", "pro", "enterprise"])
        ident = {"type": "identify", "userId": uid,
                 "traits": {"email": uid + "@example.com", "plan_tier": tier,
                            "company": {"size": rng.choice([5, 20, 80, 150, 400])}}}
        if anon:
            ident["anonymousId"] = anon
            links.append((anon, uid))
        if rng.random() < 0.2:  # some people do something as themselves first
            seq.append({"type": "track", "event": "Pricing Viewed", "userId": uid})
        seq.append(ident)
        def who():
            r = rng.random()
            if anon and r < 0.4:
                return {"anonymousId": anon}  # after the link: must reach the user
            if anon and r < 0.55:
                return {"userId": uid, "anonymousId": anon}
            return {"userId": uid}
        seq.append({"type": "track", "event": "Signed Up",
                    "properties": {"plan": "trial" if rng.random() < 0.8 else "pro"}} | who())
        later = []
        for _ in range(rng.randint(2, 8)):
            r = rng.random()
            if r < 0.05:
                later.append({"type": "track", "event": "Account Deleted"})
            elif r < 0.12:
                later.append({"type": "track", "event": "Subscription Started"})
            elif r < 0.2:
                t = rng.choice(["free", "pro", "enterprise"])
                later.append({"type": "identify", "traits": {"plan_tier": t}, "userId": uid})
                continue
            else:
                later.append(rng.choice([
                    {"type": "track", "event": "Project Created"},
                    {"type": "track", "event": "Project Created"},
                    {"type": "track", "event": "Teammate Invited"},
                    {"type": "track", "event": "Teammate Invited"},
                    {"type": "track", "event": "Pricing Viewed"},
                    {"type": "track", "event": "Demo Requested"},
                    {"type": "track", "event": "Webinar Joined"},
                    {"type": "page", "name": "Docs"},
                ]))
            later[-1] |= who()
        seq += later
        if rng.random() < 0.2:  # a second anonymous id, linked by alias
            a2 = "visit-%03d-%d" % (i, rng.randrange(10**6))
            ids.append(a2)
            pre = [rng.choice([{"type": "track", "event": "Pricing Viewed"}, {"type": "page", "name": "Docs"},
                               {"type": "track", "event": "Webinar Joined"}]) | {"anonymousId": a2}
                   for _ in range(rng.randint(1, 3))]
            at = rng.randint(0, len(seq))
            seq = pre + seq[:at] + [{"type": "alias", "previousId": a2, "userId": uid}] + seq[at:] + \
                [{"type": "track", "event": "Demo Requested", "anonymousId": a2}]
            links.append((a2, uid))
        people.append(seq)
    # interleave the people, each one's events in order
    events, left = [], [p for p in people if p]
    while left:
        p = rng.choice(left)
        events.append(p.pop(0))
        if not p:
            left.remove(p)
    for n, e in enumerate(events):
        e["messageId"] = "m%05d" % n
    # resent later, dropped as duplicates: only events with a userId, whose shard never
    # changes (messageIds are remembered per shard: an anonymous event resent after its
    # id was linked to a user on another shard is not seen as a duplicate there)
    for _ in range(20):
        k = rng.choice([n for n, e in enumerate(events) if "userId" in e])
        events.insert(rng.randint(k + 1, len(events)), dict(events[k]))
    nb = 0
    for k in range(0, len(events), 50):
        with open(os.path.join(out, "batch-%03d.json" % nb), "w") as f:
            json.dump({"batch": events[k:k + 50]}, f)
        nb += 1
    with open(os.path.join(out, "ids"), "w") as f:
        f.write("\n".join(ids) + "\n")
    cross = [(a, u) for a, u in links if fnv(a, 3) != fnv(u, 3)]
    # the probe of the restart: a visitor linked across shards, whose user's score
    # changes with a Pricing Viewed (any user's does)
    with open(os.path.join(out, "probe"), "w") as f:
        f.write("%s %s\n" % cross[0])
    print(len(events), nb, len(links), len(cross))

def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read().decode()

TIMES = {"entered_at", "stage_entered_at", "due", "time", "now"}
def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in TIMES and not k.startswith("time_")}
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o

def dump(port, idsfile, out):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=20)
    with open(out, "w") as f:
        for uid in open(idsfile).read().split():
            st, body = get(conn, "/v1/users/" + uid)
            f.write("user %s %s %s\n" % (uid, st, json.dumps(strip(json.loads(body)), sort_keys=True)
                                         if st == 200 else body))
        st, body = get(conn, "/v1/journeys")
        js = json.loads(body)
        f.write("journeys %s %s\n" % (st, json.dumps(js, sort_keys=True)))
        names = [j["name"] for j in (js.get("journeys", js) if isinstance(js, dict) else js)]
        for name in names:
            st, body = get(conn, "/v1/journeys/" + name)
            f.write("journey %s %s %s\n" % (name, st, json.dumps(strip(json.loads(body)), sort_keys=True)))
            st, body = get(conn, "/v1/journeys/%s/funnel?window=all" % name)
            f.write("funnel %s %s %s\n" % (name, st, json.dumps(strip(json.loads(body)), sort_keys=True)))
        st, body = get(conn, "/metrics")
        keep = ("journeyd_events_processed_total", "journeyd_events_duplicate_total",
                "journeyd_events_unmatched_total", "journeyd_events_received_total", "journeyd_actions_total",
                "journeyd_journey_", "journeyd_stage_people", "journeyd_lua_errors_total")
        for line in body.splitlines():
            if line.startswith(keep):
                f.write("metric %s\n" % line)

def outbox(src, out):
    rows = []
    for line in open(src):
        r = json.loads(line)
        a = r["action"]
        rows.append(json.dumps({"id": r["id"], "status": r["status"], "user": a.get("user"),
                                "journey": a.get("journey"), "stage": a.get("stage"), "channel": a.get("channel"),
                                "payload": a.get("payload")}, sort_keys=True))
    with open(out, "w") as f:
        f.write("".join(sorted(x + "\n" for x in rows)))

{"gen": gen, "dump": dump, "outbox": outbox}[sys.argv[1]](*sys.argv[2:])
PY

mkdir "$T/ev"
python3 "$T/h.py" gen "$T/ev" >"$T/gen.out" || fail "generator failed"
read -r NEV NBATCH NLINK NCROSS <"$T/gen.out"
[ "$NCROSS" -ge 100 ] || fail "only $NCROSS of $NLINK links cross shards"

serve() { # shards data-dir log: started, and listening itself (not another process on the port)
  JOURNEYD_SHARDS=$1 $B serve -c "$T/journeyd.lua" --listen 127.0.0.1:$PORT --data-dir "$2" >"$T/$3" 2>&1 &
  PID=$!
  i=0
  until grep -q "\"msg\":\"listening\".*\"shards\":$1," "$T/$3" && curl -sf --max-time 2 $URL/readyz >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || fail "daemon ($1 shards) exited: $(tail -n 5 "$T/$3")"
    i=$((i + 1)); [ $i -gt 100 ] && fail "daemon ($1 shards) did not start: $(tail -n 5 "$T/$3")"
    sleep 0.1
  done
}

run() { # shards name: send every batch, read everything back, stop
  serve "$1" "$T/data$2" "serve$2.log"
  for b in "$T"/ev/batch-*.json; do
    curl -sf --max-time 20 -H 'Content-Type: application/json' --data-binary @"$b" $URL/v1/batch >"$T/answer" ||
      fail "$1 shards: batch $b was not accepted: $(cat "$T/answer")"
    grep -q '"rejected":\[\]' "$T/answer" || fail "$1 shards: batch $b: $(cat "$T/answer")"
  done
  python3 "$T/h.py" dump $PORT "$T/ev/ids" "$T/state$2" || fail "$1 shards: reading the state back failed"
  stop_daemon || fail "$1 shards: the daemon did not stop cleanly: $(tail -n 5 "$T/serve$2.log")"
  $B outbox "$T/data$2" >"$T/outbox$2.raw" || fail "$1 shards: outbox exited $?"
  python3 "$T/h.py" outbox "$T/outbox$2.raw" "$T/outbox$2" || fail "$1 shards: outbox rows are not JSON"
}

compare() { # what
  diff -u "$T/${1}1" "$T/${1}3" >"$T/$1.diff" && return 0
  echo "shards: $1 differs between 1 and 3 shards (first differences):"
  grep '^[-+][^-+]' "$T/$1.diff" | head -n 12 | cut -c1-600
  exit 1
}

START=$(date +%s)
run 1 1
run 3 3
[ -d "$T/data1/store" ] && [ ! -d "$T/data1/shard-0" ] || fail "one shard must use DATA_DIR/store"
[ -d "$T/data3/shard-0/store" ] && [ -d "$T/data3/shard-2/store" ] && [ ! -d "$T/data3/shard-3" ] ||
  fail "three shards must use DATA_DIR/shard-0..2: $(ls "$T/data3")"
# the run did something worth comparing
NACT=$(wc -l <"$T/outbox1")
[ "$NACT" -ge 500 ] || fail "only $NACT actions decided"
grep -q "^metric journeyd_events_processed_total $((NEV - 20))\$" "$T/state1" ||
  fail "processed: $(grep processed_total "$T/state1"), want $((NEV - 20))"
grep -q '^metric journeyd_events_duplicate_total 20$' "$T/state1" || fail "duplicates: $(grep duplicate "$T/state1")"
grep -q '"lifecycle": "activated"' "$T/outbox1" || fail "no activation"
grep -q '"template": "enterprise-intro"' "$T/outbox1" || fail "no enterprise journey"
grep -q '"kind": "hot-demo"' "$T/outbox1" || fail "no hot demo"
grep -q '"stage": "expanding"' "$T/outbox1" || fail "no expansion"
grep '^user anon-' "$T/state1" | grep -q '"stage": "comparing"' || fail "no visitor journey"
grep -q 'lua_errors_total{' "$T/state1" && fail "Lua errors: $(grep lua_errors "$T/state1")"
compare outbox
compare state

# restart on the 3-shard data directory: 2 shards are refused, 3 come back
timeout 20 env JOURNEYD_SHARDS=2 $B serve -c "$T/journeyd.lua" --listen 127.0.0.1:$PORT --data-dir "$T/data3" \
  >"$T/serve2.log" 2>&1
rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "2 shards on a 3-shard directory must fail at start (exit $rc)"
grep -q "holds 3 shards but 2 are configured.*JOURNEYD_SHARDS=3" "$T/serve2.log" ||
  fail "2 shards on 3: unclear message: $(cat "$T/serve2.log")"
[ -d "$T/data3/shard-3" ] && fail "the refused start left a shard directory"
read -r ANON LINKED <"$T/ev/probe"
serve 3 "$T/data3" serve3b.log
curl -sf --max-time 5 $URL/metrics | grep -q '^journeyd_shards 3$' || fail "no journeyd_shards 3 in /metrics"
# everyone comes back from the shards' stores as they were
python3 "$T/h.py" dump $PORT "$T/ev/ids" "$T/state3b" || fail "reading the state back after the restart failed"
grep -v '^metric ' "$T/state3" >"$T/before"
grep -v '^metric ' "$T/state3b" >"$T/after"
diff -u "$T/before" "$T/after" >"$T/restart.diff" ||
  fail "the state changed with the restart: $(grep '^[-+][^-+]' "$T/restart.diff" | head -n 6 | cut -c1-400)"
score() { curl -sf --max-time 5 "$URL/v1/users/$1" | sed -n 's/.*"score":\([-0-9.e+]*\).*/\1/p'; }
before=$(score "$LINKED")
[ -n "$before" ] || fail "$LINKED unknown after the restart"
anon_before=$(curl -sf --max-time 5 "$URL/v1/users/$ANON") || fail "$ANON unknown after the restart"
curl -sf --max-time 10 -H 'Content-Type: application/json' $URL/v1/track \
  -d "{\"anonymousId\":\"$ANON\",\"event\":\"Pricing Viewed\",\"messageId\":\"probe-1\"}" >/dev/null ||
  fail "the probe event was not accepted"
after=$(score "$LINKED")
[ "$(python3 -c "print($after - $before)")" = 5.0 ] ||
  fail "$ANON (linked to $LINKED on another shard) did not reach it after a restart: score $before -> $after"
[ "$(curl -sf --max-time 5 "$URL/v1/users/$ANON")" = "$anon_before" ] || fail "the probe changed $ANON's own profile"
stop_daemon || fail "the restarted daemon did not stop cleanly"
# the outbox lists every shard's rows
$B outbox "$T/data3" >"$T/all" || fail "outbox exited $?"
total=0
for k in 0 1 2; do
  n=$($B outbox "$T/data3/shard-$k" | wc -l)
  [ "$n" -gt 0 ] || fail "shard $k decided no action"
  total=$((total + n))
done
[ "$(wc -l <"$T/all")" = "$total" ] || fail "outbox lists $(wc -l <"$T/all") rows, the shards hold $total"
[ "$total" = "$NACT" ] || fail "outbox after the restart: $total rows, was $NACT"
echo "shards: $NEV events in $NBATCH batches, $NLINK links ($NCROSS across shards), $NACT actions, same with 1 and 3 shards ($(($(date +%s) - START)) s)"
exit 0
