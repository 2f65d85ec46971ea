#!/bin/sh
# tests/bench/store.sh BUILD — the embedded store at scale (make bench): STORE_BENCH_USERS
# (1,000,000) sign-ups, each leaving ten pending timers 30-39 days out, checkpointed into
# an LMDB store in a temporary directory; then a cold process opens the store and moves its
# clock to the earliest timer. Prints figures, never pass/fail; removes the store after.
# shellcheck disable=SC2086
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
U=${STORE_BENCH_USERS:-1000000}
OUT=$BUILD/bench
mkdir -p "$OUT"
PKGS=$(sed -n 's/^PKGS[[:space:]]*:=[[:space:]]*//p' Makefile | head -n 1)
${CC:-cc} -std=c11 -O2 -g -Wall -Wextra -Iinclude -Iengine $(pkg-config --cflags $PKGS) -o "$OUT/store_bench" \
  tests/bench/store_bench.c "$BUILD/libjourneyd.a" $(pkg-config --libs $PKGS) -lm -lpthread
DIR=$(mktemp -d "${TMPDIR:-/tmp}/jd-store-bench-XXXXXX")
trap 'rm -rf "$DIR"' EXIT
"$OUT/store_bench" build tests/bench/store_bench.lua "$DIR/store" "$U" > "$OUT/store_build.txt"
"$OUT/store_bench" start tests/bench/store_bench.lua "$DIR/store" > "$OUT/store_start.txt"
v() { sed -n "s/^store_bench: $1 //p" "$OUT/store_build.txt" "$OUT/store_start.txt" | head -n 1; }
echo
echo "Store at scale ($(v users) people, $(v store_timers) pending timers; tests/bench/store.sh)"
printf '  %-52s %s\n' "build: events/s (10 timers each, checkpoint every 100K)" "$(v build_events_per_s)"
printf '  %-52s %s s (longest %s s)\n' "build: time in checkpoints" "$(v checkpoint_seconds_total)" \
  "$(v checkpoint_seconds_max)"
printf '  %-52s %s\n' "disk bytes per timer (LMDB pages / timers)" "$(v disk_bytes_per_timer)"
printf '  %-52s %s\n' "disk bytes per profile" "$(v disk_bytes_per_profile)"
printf '  %-52s %s MB\n' "store file" "$(( $(v disk_bytes_total) / 1048576 ))"
printf '  %-52s %s ms (target < 1000)\n' "cold start: open the store" "$(v open_ms)"
printf '  %-52s %s ms (target < 1000)\n' "cold start: first due timer fired" "$(v first_timer_ms)"
printf '  %-52s %s (of %s pending)\n' "timers in memory after start" "$(v timers_in_memory)" "$(v store_timers)"
printf '  %-52s %s B (target <= 64)\n' "memory per timer in the near window" "$(v memory_bytes_per_timer_in_memory)"
printf '  %-52s %s MB\n' "resident memory after start" "$(v start_rss_mb)"
