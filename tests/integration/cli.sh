#!/bin/sh
# Black-box tests of the journeyd binary's command line.
set -u
B=${1:-build}/journeyd
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "cli: $*"; exit 1; }

$B --version | grep -q '^journeyd [0-9]' || fail "--version"
$B --help | grep -q 'journeyd replay' || fail "--help"
$B frobnicate >/dev/null 2>&1; [ $? = 2 ] || fail "unknown command must exit 2"

# check: ok, and a script error as file:line: message with status 2
$B check examples/trial-onboarding/journeyd.lua >"$T/out" || fail "check of the example failed"
grep -q 'journey trial_onboarding' "$T/out" || fail "check does not list the journey"
cat >"$T/bad.lua" <<'LUA'
local j = require "journey"
j.journey "a" {
  entry = j.on("X"),
  j.stage "one" { j.on("Y"):go "nowhere" },
}
LUA
$B check "$T/bad.lua" 2>"$T/err"; rc=$?
[ $rc = 2 ] || fail "check of a bad script exited $rc, want 2"
grep -q "^$T/bad.lua:4: .*unknown stage 'nowhere'" "$T/err" || fail "error not file:line: $(cat "$T/err")"
printf 'local j = require "journey"\nj.on("X", function(ctx) ctx:send("email", {}) end\n' >"$T/syntax.lua"
$B check "$T/syntax.lua" 2>"$T/err"; [ $? = 2 ] || fail "syntax error must exit 2"
grep -q "^$T/syntax.lua:[0-9]*: " "$T/err" || fail "syntax error not file:line: $(cat "$T/err")"

# replay: malformed lines are reported with their line number, skipped and counted
cat >"$T/j.lua" <<'LUA'
local j = require "journey"
j.channel "email" { type = "webhook" }
j.on("Hello", function(ctx) ctx:send("email", { to = ctx.user.id }) end)
LUA
cat >"$T/ev.jsonl" <<'EV'
{"type":"track","userId":"a","event":"Hello","timestamp":"2026-01-01T00:00:00Z","messageId":"1"}
{"type":"track","userId":"b","event":"Hello","timestamp":"2026-01-01T00:00:01Z"
not json at all

{"type":"track","event":"Hello","timestamp":"2026-01-01T00:00:02Z","messageId":"3"}
{"type":"track","userId":"c","event":"Hello","timestamp":"2026-01-01T00:00:03Z","messageId":"4"}
EV
$B replay -c "$T/j.lua" "$T/ev.jsonl" >"$T/out" 2>"$T/err" || fail "replay exited non-zero"
[ "$(wc -l <"$T/out")" = 2 ] || fail "want 2 actions, got: $(cat "$T/out")"
grep -q "ev.jsonl:2: byte" "$T/err" || fail "line 2 not reported: $(cat "$T/err")"
grep -q "ev.jsonl:3: byte" "$T/err" || fail "line 3 not reported"
grep -q 'ev.jsonl:5: missing "userId" or "anonymousId"' "$T/err" || fail "line 5 not reported: $(cat "$T/err")"
grep -q "3 invalid" "$T/err" || fail "invalid lines not counted: $(cat "$T/err")"
# stdin, and the same input twice gives the same output (deterministic)
$B replay -c "$T/j.lua" - <"$T/ev.jsonl" >"$T/out2" 2>/dev/null || fail "replay from stdin"
cmp -s "$T/out" "$T/out2" || fail "replay is not deterministic"
$B replay -c "$T/j.lua" "$T/missing.jsonl" >/dev/null 2>&1; [ $? = 2 ] || fail "missing input must exit 2"
$B replay -c "$T/j.lua" "$T/ev.jsonl" --until yesterday >/dev/null 2>&1; [ $? = 2 ] || fail "bad --until must exit 2"
exit 0
