#!/bin/sh
# journeyd check --against DATA_DIR: a daemon leaves people in a store, then check reports
# what an edit of the journey would do to them, without changing the store.
set -u
B=${1:-build}/journeyd
T=$(mktemp -d)
. "$(dirname "$0")/../free_port.sh"
PORT=$(free_port)
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

# pins survive a restart: the earlier scripts of pinned people are kept in the store, so
# after SIGHUP, kill -TERM and a start with the new scripts, a pinned person's next event
# and its pending timer still run the version it entered with
cat >"$T/p1.lua" <<'LUA'
local j = require "journey"
j.config { checkpoint_interval = "200ms" }
j.channel "email" { type = "webhook", url = "http://127.0.0.1:9/hook" }
j.journey "trial" {
  entry = j.on("Signed Up"),
  j.stage "signed_up" {
    j.on("Ping", function(ctx) ctx:send("email", { template = "ping-v1" }) end),
    j.after("6s", function(ctx) ctx:send("email", { template = "later-v1" }) end),
  },
}
LUA
sed 's/-v1"/-v2"/g' "$T/p1.lua" >"$T/p2.lua"
serve() { # log
  $B serve -c "$T/pin.lua" --listen 127.0.0.1:$PORT --data-dir "$T/pdata" >"$T/$1" 2>&1 &
  PID=$!
  i=0
  until curl -sf "http://127.0.0.1:$PORT/livez" >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || fail "$1: the daemon exited: $(tail -3 "$T/$1")"
    i=$((i + 1)); [ $i -gt 100 ] && fail "$1: the daemon did not start: $(tail -3 "$T/$1")"; sleep 0.1
  done
}
pinned() { curl -sf "http://127.0.0.1:$PORT/v1/users/$1" | grep -q "\"pinned\":$2" || fail "$1 pinned is not $2: $(curl -s "http://127.0.0.1:$PORT/v1/users/$1")"; }
cp "$T/p1.lua" "$T/pin.lua"
serve pin1.log
post '{"userId":"old","event":"Signed Up","messageId":"p1"}'
cp "$T/p2.lua" "$T/pin.lua"
kill -HUP "$PID"
i=0
until grep -q "scripts reloaded" "$T/pin1.log"; do
  i=$((i + 1)); [ $i -gt 50 ] && fail "no reload: $(tail -3 "$T/pin1.log")"; sleep 0.1
done
post '{"userId":"new","event":"Signed Up","messageId":"p2"}'
pinned old true
kill -TERM "$PID"; wait "$PID"; PID=
$B outbox "$T/pdata" >"$T/ob0" || fail "outbox exited $?"
grep -q later- "$T/ob0" && fail "the timers fired before the restart: $(cat "$T/ob0")"

serve pin2.log # the new scripts only on disk
pinned old true
pinned new false
post '{"userId":"old","event":"Ping","messageId":"p3"}'
post '{"userId":"new","event":"Ping","messageId":"p4"}'
i=0
until $B outbox "$T/pdata" >"$T/ob" && [ "$(grep -c later- "$T/ob")" = 2 ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "timers did not fire: $(cat "$T/ob")"; sleep 0.1
done
one() { # user template
  [ "$(grep "\"user\":\"$1\"" "$T/ob" | grep -c "$2")" = 1 ] || fail "$1 $2: $(cat "$T/ob")"
}
one old ping-v1
one old later-v1
one new ping-v2
one new later-v2
grep '"user":"old"' "$T/ob" | grep -q -- '-v2' && fail "old ran v2: $(cat "$T/ob")"
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^journeyd_pinned_people 1$' || fail "metrics: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep pinned)"
kill -TERM "$PID"; wait "$PID"; PID=
# check --against reads a store that keeps earlier scripts: one person on each version
$B check --against "$T/pdata" "$T/p2.lua" >"$T/out5" || fail "check --against exited $?"
grep -q "^journey trial  version [0-9a-f]\{16\}: unchanged (active: 1 on it, 1 on others" "$T/out5" || fail "check: $(cat "$T/out5")"
exit 0
