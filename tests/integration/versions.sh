#!/bin/sh
# journeyd check --against DATA_DIR: a daemon leaves people in a store, then check reports
# what an edit of the journey would do to them, without changing the store.
set -u
B=${1:-build}/journeyd
T=$(mktemp -d)
PORT=$((20000 + $$ % 20000))
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$T"' EXIT
fail() { echo "versions: $*"; exit 1; }

cat >"$T/v1.lua" <<'LUA'
local j = require "journey"
j.journey "trial" {
  entry = j.on("Signed Up"),
  j.stage "signed_up" { j.on("Project Created"):go "activated" },
  j.stage "activated" {},
}
LUA
cat >"$T/v2.lua" <<'LUA'
local j = require "journey"
j.journey "trial" {
  entry = j.on("Signed Up"),
  migrate = { signed_up = "onboarding", ["*"] = "exit" },
  j.stage "onboarding" { j.on("Project Created"):go "done" },
  j.stage "done" {},
}
LUA
$B serve -c "$T/v1.lua" --listen 127.0.0.1:$PORT --data-dir "$T/data" >"$T/serve.log" 2>&1 &
PID=$!
i=0
until curl -sf "http://127.0.0.1:$PORT/livez" >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 50 ] && fail "daemon did not start: $(tail -3 "$T/serve.log")"; sleep 0.1
done
post() { curl -sf -X POST "http://127.0.0.1:$PORT/v1/track" -H 'Content-Type: application/json' -d "$1" >/dev/null || fail "post $1"; }
post '{"userId":"u1","event":"Signed Up","messageId":"m1"}'
post '{"userId":"u2","event":"Signed Up","messageId":"m2"}'
post '{"userId":"u3","event":"Signed Up","messageId":"m3"}'
post '{"userId":"u3","event":"Project Created","messageId":"m4"}'
kill -TERM "$PID"; wait "$PID"; PID=

$B check --against "$T/data" "$T/v1.lua" >"$T/same" || fail "check --against exited $?"
grep -q "^journey trial  version [0-9a-f]\{16\}: unchanged (active: 3 on it" "$T/same" || fail "same scripts: $(cat "$T/same")"
$B check --against "$T/data" "$T/v2.lua" >"$T/out" || fail "check --against exited $?"
grep -q "^journey trial  version [0-9a-f]\{16\}: changes (was [0-9a-f]\{16\}) (active: 0 on it, 3 on others" "$T/out" || fail "no change: $(cat "$T/out")"
grep -q "^  stage signed_up: 2 active (version [0-9a-f]*) migrate: to onboarding" "$T/out" || fail "migrate: $(cat "$T/out")"
grep -q "^  stage activated: 1 active (version [0-9a-f]*) migrate: exit" "$T/out" || fail "exit: $(cat "$T/out")"
grep -q "^  stage done: added" "$T/out" || fail "added: $(cat "$T/out")"
grep -q "^  stage onboarding: added" "$T/out" || fail "added: $(cat "$T/out")"

# a new journey, and one the edit removes
sed 's/"trial"/"renamed"/' "$T/v1.lua" >"$T/v3.lua"
$B check --against "$T/data" "$T/v3.lua" >"$T/out3" || fail "check --against exited $?"
grep -q "^journey trial: removed; 3 active leave it" "$T/out3" || fail "removed journey: $(cat "$T/out3")"
grep -q "^journey renamed  version [0-9a-f]\{16\}: new journey" "$T/out3" || fail "new journey: $(cat "$T/out3")"
$B check --against "$T/nowhere" "$T/v2.lua" >/dev/null 2>&1; [ $? = 2 ] || fail "a missing store must exit 2"

# an edit without migrate pins: check says so, and after SIGHUP the daemon shows it
sed 's/"activated" },/"activated", j.after("1d", function(ctx) ctx:log("v4") end) },/' "$T/v1.lua" >"$T/v4.lua"
$B check --against "$T/data" "$T/v4.lua" >"$T/out4" || fail "check --against exited $?"
grep -q "^  stage signed_up: 2 active (version [0-9a-f]*) pin: keep version" "$T/out4" || fail "pin: $(cat "$T/out4")"
cp "$T/v1.lua" "$T/live.lua"
$B serve -c "$T/live.lua" --listen 127.0.0.1:$PORT --data-dir "$T/data" >"$T/serve2.log" 2>&1 &
PID=$!
i=0
until curl -sf "http://127.0.0.1:$PORT/livez" >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 50 ] && fail "daemon did not restart: $(tail -3 "$T/serve2.log")"; sleep 0.1
done
cp "$T/v4.lua" "$T/live.lua"
kill -HUP "$PID"
i=0
until grep -q "scripts reloaded" "$T/serve2.log"; do
  i=$((i + 1)); [ $i -gt 50 ] && fail "no reload: $(tail -3 "$T/serve2.log")"; sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/v1/users/u1" | grep -q '"pinned":true' || fail "u1 not pinned: $(curl -s "http://127.0.0.1:$PORT/v1/users/u1")"
post '{"userId":"u9","event":"Signed Up","messageId":"m9"}'
curl -sf "http://127.0.0.1:$PORT/v1/users/u9" | grep -q '"pinned":false' || fail "u9 pinned"
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^journeyd_pinned_people 3$' || fail "metrics: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep pinned)"
kill -TERM "$PID"; wait "$PID"; PID=
exit 0
