#!/bin/sh
# Runs every test layer and ends with one line "N passed, N failed".
#   unit: the cmocka binaries in BUILD/tests (their own summaries are printed too)
#   examples: each examples/*/ replayed and compared with its expected.jsonl
#   cli: tests/integration/*.sh (black-box tests of the journeyd binary)
#   browser: tests/browser/*.sh (the dashboard in headless chromium; skipped without it)
#   fuzz: each libFuzzer target in FUZZ_BUILD/fuzz for FUZZ_SMOKE_SECONDS (5) over its seeds
#         (tests/fuzz/corpus/NAME, read only); new inputs go to a temporary directory,
#         crashes to FUZZ_BUILD/artifacts/NAME/, the log to FUZZ_BUILD/NAME.log
BUILD=${1:-build}
FUZZ_BUILD=${2:-build-fuzz}
passed=0
failed=0
failures=""
add() { # name status
  if [ "$2" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures="$failures $1"; fi
}

for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED)  \]|^\[  FAILED  \]|^\[  ERROR   \]' | sed "s|^|$(basename "$t"): |"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ "$rc" != 0 ]; then
    printf '%s\n' "$out" | tail -n 40
    [ -z "$f" ] && failed=$((failed + 1))
    failures="$failures $(basename "$t")"
  fi
done

for d in examples/*/; do
  [ -f "$d/expected.jsonl" ] || continue
  if sh tests/examples.sh "$BUILD" "$d"; then add "$d" 0; else add "$d" 1; fi
done

# the sources are as clang-format writes them (.clang-format)
if make -s format-check > /dev/null 2>&1; then add format-check 0; echo "ok   format-check"; else add format-check 1; echo "FAIL format-check (run make format)"; fi

for s in tests/integration/*.sh; do
  [ -f "$s" ] || continue
  if sh "$s" "$BUILD"; then add "$s" 0; echo "ok   $s"; else add "$s" 1; echo "FAIL $s"; fi
done

# browser: tests/browser/*.sh drive the dashboard in headless chromium; exit 77 means
# chromium is missing: "skip", counted neither way
for s in tests/browser/*.sh; do
  [ -f "$s" ] || continue
  sh "$s" "$BUILD"; rc=$?
  if [ "$rc" = 77 ]; then echo "skip $s"; elif [ "$rc" = 0 ]; then add "$s" 0; echo "ok   $s"; else add "$s" 1; echo "FAIL $s"; fi
done

for f in "$FUZZ_BUILD"/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  work=$(mktemp -d)
  mkdir -p "$FUZZ_BUILD/artifacts/$name"
  if "$f" -max_total_time="${FUZZ_SMOKE_SECONDS:-5}" -timeout=10 -artifact_prefix="$FUZZ_BUILD/artifacts/$name/" \
      "$work" "tests/fuzz/corpus/$name" >/dev/null 2>"$FUZZ_BUILD/$name.log"; then
    add "$name" 0; echo "ok   $name ($(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$FUZZ_BUILD/$name.log") runs)"
  else
    add "$name" 1; echo "FAIL $name"; tail -n 30 "$FUZZ_BUILD/$name.log"
  fi
  rm -rf "$work"
done

[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
