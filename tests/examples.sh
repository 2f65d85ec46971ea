#!/bin/sh
# Replays one example folder and compares its actions with expected.jsonl.
#   examples/NAME/journeyd.lua, events.jsonl, expected.jsonl, optional replay.args
set -u
BUILD=$1
d=${2%/}
args=$(cat "$d/replay.args" 2>/dev/null || true)
out=$(mktemp)
# shellcheck disable=SC2086
"$BUILD/journeyd" replay -c "$d/journeyd.lua" "$d/events.jsonl" $args >"$out" 2>"$out.err"
rc=$?
if [ $rc != 0 ]; then
  echo "FAIL $d: replay exited $rc"; cat "$out.err"; rm -f "$out" "$out.err"; exit 1
fi
if ! diff -u "$d/expected.jsonl" "$out" >"$out.diff"; then
  echo "FAIL $d: actions differ from expected.jsonl"; head -n 40 "$out.diff"
  rm -f "$out" "$out.err" "$out.diff"; exit 1
fi
if [ -f "$d/expected-funnel.txt" ] && ! grep -v '^replayed ' "$out.err" | grep -v '^error: \|^info: \|^lua: \|events.jsonl:[0-9]*:' | diff -u "$d/expected-funnel.txt" - >"$out.diff"; then
  echo "FAIL $d: funnel differs from expected-funnel.txt"; head -n 40 "$out.diff"
  rm -f "$out" "$out.err" "$out.diff"; exit 1
fi
echo "ok   $d ($(wc -l <"$out") actions)"
rm -f "$out" "$out.err" "$out.diff"
