#!/bin/sh
# Black-box tests of `journeyd trace`: a dry run over examples/trial-onboarding (the
# timeline of each person, worked out from the events and the journey by hand), and the
# same person asked of a running daemon with --url (GET /v1/users/ID/trace).
set -u
B=${1:-build}/journeyd
EX=examples/trial-onboarding
T=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
fail() { echo "trace: $*"; exit 1; }

# u2 signs up and never creates a project: welcome, the 2d nudge, the 5d team alert and
# the move to dormant, then dormant's 9d timeout exits
$B trace -c $EX/journeyd.lua $EX/events.jsonl --until 2026-12-01T00:00:00Z u2 >"$T/u2" 2>"$T/err" ||
  fail "dry run exited $?: $(cat "$T/err")"
head -n 1 "$T/u2" | grep -q '^user u2: 9 decisions, oldest first$' || fail "header: $(head -n 1 "$T/u2")"
sed -n 2p "$T/u2" | grep -q '^  2026-11-01T10:00:01.000Z  entered .*trial_onboarding/signed_up .*on Signed Up$' ||
  fail "first line: $(sed -n 2p "$T/u2")"
grep -q '2026-11-03T10:00:01.000Z  timer .*after 2d$' "$T/u2" || fail "no 2d timer: $(cat "$T/u2")"
grep -q '2026-11-06T10:00:01.000Z  action .*team [0-9a-f]\{32\} (trial_onboarding/signed_up/after 5d#2)$' "$T/u2" ||
  fail "no team action at 5d"
grep -q '2026-11-06T10:00:01.000Z  moved .*trial_onboarding/dormant .*signed_up -> dormant' "$T/u2" || fail "no move to dormant"
tail -n 1 "$T/u2" | grep -q '2026-11-15T10:00:01.000Z  exited .*trial_onboarding/dormant' || fail "last: $(tail -n 1 "$T/u2")"
grep -q '1 invalid line skipped' "$T/err" || fail "the bad line is not reported: $(cat "$T/err")"

# u1's 7d upgrade offer comes due at the very moment u1 subscribes (activated at
# 11-02T08:00, subscribed 11-09T08:00): timers due at or before an event fire first
$B trace -c $EX/journeyd.lua $EX/events.jsonl u1 >"$T/u1" 2>/dev/null || fail "u1 dry run"
[ "$(sed 1d "$T/u1" | awk '{print $2}' | tr '\n' ' ')" = "entered action moved action timer action converted " ] ||
  fail "u1 kinds: $(cat "$T/u1")"
# --json gives the API's JSON
$B trace -c $EX/journeyd.lua $EX/events.jsonl --json u1 2>/dev/null | grep -q '^{"id":"u1","decisions":\[{"time":' ||
  fail "--json"
# u3 signed up on the pro plan: known, but no journey decisions
$B trace -c $EX/journeyd.lua $EX/events.jsonl u3 2>/dev/null | grep -q '^user u3: 0 decisions' || fail "u3"
$B trace -c $EX/journeyd.lua $EX/events.jsonl nobody >/dev/null 2>"$T/err"; [ $? = 1 ] || fail "unknown user must exit 1"
grep -q "no such user 'nobody'" "$T/err" || fail "unknown user message: $(cat "$T/err")"
$B trace u1 >/dev/null 2>&1; [ $? = 2 ] || fail "no source must exit 2"
$B trace -c $EX/journeyd.lua --url http://127.0.0.1:1 u1 >/dev/null 2>&1; [ $? = 2 ] || fail "both sources must exit 2"

# a running daemon: the same person's decisions through --url
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo $((20000 + $$ % 30000)))
$B serve -c $EX/journeyd.lua --listen 127.0.0.1:$PORT --data-dir "$T/data" >"$T/serve.log" 2>&1 &
PID=$!
i=0
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "daemon did not start: $(cat "$T/serve.log")"; sleep 0.1
done
grep '^{' $EX/events.jsonl | sed 's/"timestamp":"[^"]*",//' | while IFS= read -r ev; do
  kind=$(printf '%s' "$ev" | sed 's/.*"type":"\([a-z]*\)".*/\1/')
  curl -s -o /dev/null http://127.0.0.1:$PORT/v1/$kind -d "$ev"
done
$B trace --url http://127.0.0.1:$PORT u1 >"$T/live" 2>"$T/err" || fail "--url exited $?: $(cat "$T/err")"
[ "$(sed 1d "$T/live" | awk '{print $2}' | tr '\n' ' ')" = "entered action moved action converted " ] ||
  fail "live u1 kinds: $(cat "$T/live")"
grep -q 'signed_up -> activated on Project Created' "$T/live" || fail "live trace lacks the reason"
$B trace --url http://127.0.0.1:$PORT/ nobody >/dev/null 2>"$T/err"; [ $? = 1 ] || fail "--url unknown user must exit 1"
grep -q "no such user 'nobody'" "$T/err" || fail "--url unknown user message: $(cat "$T/err")"
curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/v1/users/u1/trace | grep -q 200 || fail "GET trace"
curl -s http://127.0.0.1:$PORT/v1/journeys/trial_onboarding/funnel?window=24h | grep -q '"name":"signed_up","entered":2' ||
  fail "funnel: $(curl -s http://127.0.0.1:$PORT/v1/journeys/trial_onboarding/funnel?window=24h)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/journeys/trial_onboarding/funnel?window=2d")" = 400 ] ||
  fail "a bad window must answer 400"
exit 0
