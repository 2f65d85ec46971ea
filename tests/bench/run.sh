#!/bin/sh
# tests/bench/run.sh BUILD — the benchmark behind `make bench`. Prints figures, never
# pass/fail.
#
#  1. builds gen, floor, luashare and json_bench (tests/bench/*.c) into BUILD/bench/
#  2. writes the event stream once: BUILD/bench/events.jsonl (gen: 1,000,000 Segment
#     events for 100,000 users; reused while gen's arguments, its sources and the
#     file's size are unchanged) and BUILD/bench/plan.bin (the Lua calls of its events
#     and of the timers they set, as gen's model of bench.lua predicts them)
#  3. times `BUILD/journeyd replay -c tests/bench/bench.lua events.jsonl > /dev/null`
#     (median wall time of BENCH_RUNS runs, peak RSS)
#  4. luashare: the same stream through libjourneyd, counting the events that reach
#     Lua and the Lua calls of events and of timers
#  5. floor: the same hook functions, called from a bare C loop (no engine) once per
#     call the engine makes: per Lua-reaching event and per timer hook; the lower bound
#     for the replay
#  6. json_bench: JSON parse cost per event, ours against jansson and cJSON
#
# Environment: BENCH_EVENTS (1000000), BENCH_USERS (100000), BENCH_RUNS (3),
# BENCH_PAIRS (7: in-memory and floor runs back to back),
# BENCH_PERF=1 adds a perf profile (top 10 functions by self time) of a replay of the
# first BENCH_PERF_EVENTS (100000) events, when perf is installed. CC, CFLAGS.
# Word splitting of pkg-config output and flag lists is intended throughout.
# shellcheck disable=SC2086,SC2046
set -eu

cd "$(dirname "$0")/../.." # the repository root: BUILD is relative to it
BUILD=${1:-build}
HERE=tests/bench
OUT=$BUILD/bench
N=${BENCH_EVENTS:-1000000}
U=${BENCH_USERS:-100000}
RUNS=${BENCH_RUNS:-3}
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -g}
CONFIG=$HERE/bench.lua

if [ ! -x "$BUILD/journeyd" ] || [ ! -f "$BUILD/libjourneyd.a" ]; then
  echo "bench: $BUILD/journeyd or $BUILD/libjourneyd.a missing (make all first)" >&2
  exit 2
fi
mkdir -p "$OUT"

# ---------------------------------------------------------------- build
# the engine library's pkg-config packages, as the Makefile names them
PKGS=$(sed -n 's/^PKGS[[:space:]]*:=[[:space:]]*//p' Makefile 2> /dev/null | head -n 1)
[ -n "$PKGS" ] || PKGS="lua5.4 msgpack yajl"
ENGINE_CFLAGS=$(pkg-config --cflags $PKGS)
ENGINE_LIBS="$(pkg-config --libs $PKGS) -lm -lpthread"
CC_ALL="$CC -std=c11 $CFLAGS -Wall -Wextra -I$HERE -Iinclude -Iengine"
$CC_ALL -o "$OUT/gen" "$HERE/gen.c" -lm
$CC_ALL $ENGINE_CFLAGS -o "$OUT/floor" "$HERE/floor.c" $(pkg-config --libs lua5.4) -lm
$CC_ALL $ENGINE_CFLAGS -o "$OUT/luashare" "$HERE/luashare.c" "$BUILD/libjourneyd.a" $ENGINE_LIBS
$CC_ALL $ENGINE_CFLAGS -o "$OUT/inmem" "$HERE/inmem.c" "$BUILD/libjourneyd.a" $ENGINE_LIBS
JB_CFLAGS="" JB_LIBS="" JB_MISSING=""
for p in jansson libcjson; do
  if pkg-config --exists $p; then
    JB_CFLAGS="$JB_CFLAGS $(pkg-config --cflags $p)"
    JB_LIBS="$JB_LIBS $(pkg-config --libs $p)"
    case $p in jansson) JB_CFLAGS="$JB_CFLAGS -DHAVE_JANSSON" ;; libcjson) JB_CFLAGS="$JB_CFLAGS -DHAVE_CJSON" ;; esac
  else
    case $p in jansson) JB_MISSING="$JB_MISSING libjansson-dev" ;; libcjson) JB_MISSING="$JB_MISSING libcjson-dev" ;; esac
  fi
done
$CC_ALL $ENGINE_CFLAGS $JB_CFLAGS -o "$OUT/json_bench" "$HERE/json_bench.c" "$BUILD/libjourneyd.a" $JB_LIBS $ENGINE_LIBS

# ---------------------------------------------------------------- the stream
EVENTS=$OUT/events.jsonl
PLAN=$OUT/plan.bin
STAMP=$OUT/events.stamp
src_sum=$(cat "$HERE/gen.c" "$HERE/bench_hooks.h" | cksum | cut -d' ' -f1)
want="n=$N u=$U gen=$src_sum"
size_of() { wc -c < "$1" | tr -d ' '; }
if [ -f "$EVENTS" ] && [ -f "$PLAN" ] && [ -f "$STAMP" ] && [ -f "$OUT/gen.txt" ] &&
   [ "$(cat "$STAMP")" = "$want bytes=$(size_of "$EVENTS")" ]; then
  echo "bench: reusing $EVENTS"
else
  echo "bench: writing $EVENTS ($N events, $U users)"
  rm -f "$STAMP"
  "$OUT/gen" -n "$N" -u "$U" -p "$PLAN" -v > "$EVENTS" 2> "$OUT/gen.txt"
  echo "$want bytes=$(size_of "$EVENTS")" > "$STAMP"
fi
LINES=$(wc -l < "$EVENTS" | tr -d ' ')
BYTES=$(size_of "$EVENTS")
gen_val() { sed -n "s/^gen: $1 //p" "$OUT/gen.txt"; }

# ---------------------------------------------------------------- replay
now_ns() { date +%s%N; }
TIME_BIN=""
if [ -x /usr/bin/time ] && /usr/bin/time -v true > /dev/null 2>&1; then TIME_BIN=/usr/bin/time; fi

# run_measured OUTFILE ERRFILE CMD...: sets WALL (s) and RSS (kB)
run_measured() {
  o=$1 e=$2
  shift 2
  if [ -n "$TIME_BIN" ]; then
    t0=$(now_ns)
    "$TIME_BIN" -v -o "$OUT/time.txt" "$@" > "$o" 2> "$e"
    t1=$(now_ns)
    RSS=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$OUT/time.txt")
  else # no GNU time: poll the process's VmHWM (its peak RSS so far) until it exits
    t0=$(now_ns)
    "$@" > "$o" 2> "$e" &
    pid=$!
    RSS=0
    while kill -0 "$pid" 2> /dev/null; do
      h=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2> /dev/null || true)
      [ -n "$h" ] && RSS=$h
      sleep 0.05
    done
    wait "$pid"
    t1=$(now_ns)
  fi
  WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}

echo "bench: journeyd replay x$RUNS"
walls=""
RSS_MAX=0
i=0
while [ "$i" -lt "$RUNS" ]; do
  run_measured /dev/null "$OUT/replay.err" "$BUILD/journeyd" replay -c "$CONFIG" "$EVENTS"
  walls="$walls $WALL"
  [ "${RSS:-0}" -gt "$RSS_MAX" ] && RSS_MAX=$RSS
  i=$((i + 1))
done
REPLAY_WALL=$(echo "$walls" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
SUMMARY=$(grep '^replayed ' "$OUT/replay.err" || true)

# ---------------------------------------------------------------- library counts, floor, JSON
echo "bench: luashare"
run_measured "$OUT/luashare.txt" "$OUT/luashare.err" "$OUT/luashare" "$CONFIG" "$EVENTS"
LIB_RSS=$RSS
ls_val() { sed -n "s/^luashare: $1 //p" "$OUT/luashare.txt"; }

# The in-memory path and the floor run back to back, PAIRS times: their ratio is taken
# per pair (each pair under the same load from the rest of the machine) and the median
# of those is reported, with the median of each side's times.
PAIRS=${BENCH_PAIRS:-7}
echo "bench: in-memory path and floor, $PAIRS pairs"
iwalls=""
fwalls=""
ratios=""
i=0
while [ "$i" -lt "$PAIRS" ]; do
  "$OUT/inmem" "$CONFIG" "$EVENTS" > "$OUT/inmem.txt"
  "$OUT/floor" "$HERE/bench_hooks.lua" "$PLAN" "$LINES" > "$OUT/floor.txt"
  iw=$(sed -n 's/^inmem: seconds //p' "$OUT/inmem.txt")
  fw=$(sed -n 's/^floor: seconds //p' "$OUT/floor.txt")
  iwalls="$iwalls $iw"
  fwalls="$fwalls $fw"
  ratios="$ratios $(awk -v a="$iw" -v b="$fw" 'BEGIN { printf "%.3f", a / b }')"
  i=$((i + 1))
done
median() { echo "$1" | tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
INMEM_S=$(median "$iwalls")
FLOOR_S=$(median "$fwalls")
INMEM_RATIO=$(median "$ratios")
FLOOR_CALLS=$(sed -n 's/^floor: calls //p' "$OUT/floor.txt")

echo "bench: json_bench"
"$OUT/json_bench" "$CONFIG" > "$OUT/json_bench.txt"

# ---------------------------------------------------------------- report
echo
echo "== journeyd bench: $LINES events, $(awk -v b="$BYTES" -v n="$LINES" 'BEGIN { printf "%.0f MB, %.0f B/event", b / 1e6, b / n }'), $U users; $CONFIG =="
echo "engine: $(git describe --always --dirty 2> /dev/null || echo '?'), $BUILD/journeyd of $(date -r "$BUILD/journeyd" '+%F %T' 2> /dev/null || echo '?'); $(nproc 2> /dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo '?')"
printf '%-40s %8s %11s %9s %9s\n' "" "wall s" "events/s" "us/event" "peak RSS"
awk -v w="$REPLAY_WALL" -v n="$LINES" -v r="$RSS_MAX" -v runs="$RUNS" 'BEGIN {
  printf "%-40s %8.3f %11.0f %9.2f %6.0f MB\n", "journeyd replay > /dev/null (median of " runs ")", w, n / w, w * 1e6 / n, r / 1024 }'
awk -v w="$(ls_val seconds)" -v n="$LINES" -v r="$LIB_RSS" 'BEGIN {
  printf "%-40s %8.3f %11.0f %9.2f %6.0f MB\n", "libjourneyd ingest, actions counted only", w, n / w, w * 1e6 / n, r / 1024 }'
awk -v w="$INMEM_S" -v n="$LINES" 'BEGIN {
  printf "%-40s %8.3f %11.0f %9.2f %9s\n", "in-memory path: records, no JSON", w, n / w, w * 1e6 / n, "-" }'
awk -v w="$FLOOR_S" -v n="$LINES" -v c="$FLOOR_CALLS" 'BEGIN {
  printf "%-40s %8.3f %11.0f %9.2f %9s\n", "floor: " c " hook calls, bare C + Lua", w, n / w, w * 1e6 / n, "-" }'
awk -v w="$REPLAY_WALL" -v f="$FLOOR_S" -v r="$INMEM_RATIO" -v all="$walls" -v rs="$ratios" 'BEGIN { printf "replay / floor: %.1fx, in-memory / floor: %.2fx (median of pairs:%s)   (replay runs:%s s)\n", w / f, r, rs, all }'
echo "(floor: only the hook calls of events and timers, from a C loop with no engine; its events/s divides all $LINES events by that time)"
awk -v ce="$(ls_val lua_calls_events)" -v ct="$(ls_val lua_calls_timers)" -v fc="$FLOOR_CALLS" 'BEGIN {
  if (ce + ct != fc) printf "(note: the engine made %d Lua calls, the floor %d: gen'\''s model of bench.lua is off)\n", ce + ct, fc }'
echo
echo "event mix (engine counters; gen's model in brackets)"
awk -v n="$LINES" -v um="$(ls_val unmatched)" -v lu="$(ls_val lua_events)" \
    -v gum="$(gen_val unmatched)" -v glu="$(gen_val lua_events)" -v gno="$(gen_val matched_no_lua)" 'BEGIN {
  c = n - um - lu
  printf "  %-38s %9d %6.1f%%  [%d]\n", "name no trigger (page views, noise)", um, 100 * um / n, gum
  printf "  %-38s %9d %6.1f%%  [%d]\n", "name a trigger, stay in C", c, 100 * c / n, gno
  printf "  %-38s %9d %6.1f%%  [%d]\n", "reach Lua (run >= 1 hook)", lu, 100 * lu / n, glu }'
awk -v ce="$(ls_val lua_calls_events)" -v ct="$(ls_val lua_calls_timers)" -v fus="$FLOOR_S" -v fc="$FLOOR_CALLS" \
    -v w="$REPLAY_WALL" 'BEGIN {
  t = ce + ct
  printf "  Lua calls: %d (%d from events, %d from timers); at the floor'\''s %.2f us a call\n", t, ce, ct, fus * 1e6 / fc
  printf "  that is %.2f s, %.0f%% of the replay'\''s wall time\n", t * fus / fc, 100 * t * fus / fc / w }'
echo "  actions $(ls_val actions), timers fired $(ls_val timers_fired), users $(ls_val users), Lua heap $(ls_val lua_memory) B, lua errors $(ls_val lua_errors)"
[ -n "$SUMMARY" ] && echo "  replay: $SUMMARY"
echo
cat "$OUT/json_bench.txt"
[ -n "$JB_MISSING" ] && echo "(not measured: install$JB_MISSING for the other parsers)"

# ---------------------------------------------------------------- optional profile
# A replay of the first BENCH_PERF_EVENTS events under perf: the top 10 functions by
# self time, then the inclusive share of the engine's stages. Lua, yajl and msgpack
# are stripped shared libraries on Debian, so their functions would show as bare
# addresses: the profile runs journeyd-prof, the same objects linked with the static
# (symbol-carrying) liblua5.4.a, libyajl_s.a and libmsgpackc.a; failing that, journeyd.
if [ "${BENCH_PERF:-0}" = 1 ]; then
  echo
  if command -v perf > /dev/null 2>&1; then
    PN=${BENCH_PERF_EVENTS:-100000}
    head -n "$PN" "$EVENTS" > "$OUT/events_head.jsonl"
    PROF=$BUILD/journeyd
    cli_objs=""
    for src in $(sed -n 's/^CLI_SRC[[:space:]]*:=[[:space:]]*//p' Makefile | head -n 1); do
      cli_objs="$cli_objs $BUILD/obj/$(basename "$src" .c).o"
    done
    serve_pkgs=$(sed -n 's/^SERVE_PKGS[[:space:]]*:=[[:space:]]*//p' Makefile | head -n 1)
    # shellcheck disable=SC2086
    static_libs=$(pkg-config --libs $PKGS $serve_pkgs | sed -e 's/-llua5\.4/-Wl,-Bstatic -llua5.4 -Wl,-Bdynamic/' \
      -e 's/-lyajl/-Wl,-Bstatic -lyajl_s -Wl,-Bdynamic/' -e 's/-lmsgpackc/-Wl,-Bstatic -lmsgpackc -Wl,-Bdynamic/')
    # shellcheck disable=SC2086
    if [ -n "$cli_objs" ] && $CC -o "$OUT/journeyd-prof" $cli_objs "$BUILD/libjourneyd.a" $static_libs -lm -ldl \
        2> "$OUT/journeyd-prof.err"; then
      PROF=$OUT/journeyd-prof
    fi
    if perf record -q -F 20000 -o "$OUT/perf.data" "$PROF" replay -c "$CONFIG" "$OUT/events_head.jsonl" \
        > /dev/null 2> "$OUT/perf.err" &&
       perf record -q -F 2000 --call-graph dwarf,16384 -o "$OUT/perf-g.data" "$PROF" replay -c "$CONFIG" \
        "$OUT/events_head.jsonl" > /dev/null 2>> "$OUT/perf.err"; then
      echo "== perf: $PROF replay of the first $PN events =="
      echo "top 10 functions by self time:"
      perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -q 2> /dev/null |
        awk 'NF >= 4 && $1 ~ /%$/ { sym = $4; for (i = 5; i <= NF && $i != "-"; i++) sym = sym " " $i
                                    printf "  %7s  %-22s %s\n", $1, $2, sym; if (++n == 10) exit }'
      echo "inclusive time of the engine's stages (dwarf call graphs):"
      perf report -i "$OUT/perf-g.data" --children --sort symbol --stdio -q -g none 2> /dev/null > "$OUT/perf-g.txt"
      for f in jd_json_to_msgpack jd_event_normalize msgpack_unpack jd_dedupe_check process_view run_hook \
               ctx_index jd_action_json jd_engine_advance jd_engine_free __GI___getdelim exc_page_fault; do
        awk -v f="$f" '$4 == f || ($4 == f && $5 == "(inlined)") { printf "  %7s  %s\n", $1, f; exit }' "$OUT/perf-g.txt"
      done
    else
      echo "perf record failed (see $OUT/perf.err; kernel.perf_event_paranoid?)"
    fi
  else
    echo "BENCH_PERF=1: perf not installed (apt-get install linux-perf)"
  fi
fi

# the figures tests/bench/table.sh puts in its table
{
  echo "lines $LINES"
  echo "runs $RUNS"
  echo "replay_seconds $REPLAY_WALL"
  echo "replay_rss_kb $RSS_MAX"
  echo "inmem_seconds $INMEM_S"
  echo "floor_seconds $FLOOR_S"
  echo "floor_calls $FLOOR_CALLS"
  echo "pairs $PAIRS"
  echo "inmem_floor_ratio $INMEM_RATIO"
  echo "inmem_floor_ratios$ratios"
} > "$OUT/results.txt"

sh "$HERE/http.sh" "$BUILD"

# ---------------------------------------------------------------- delivery
# deliver_bench.c: signed webhooks/s through the dispatcher to a local evhttp receiver,
# 64 in flight. Guarded: a failure here is reported, the other figures stand.
(
  DP=$(sed -n 's/^PKGS[[:space:]]*:=[[:space:]]*//p' Makefile | head -n 1)
  mkdir -p "$BUILD/bench"
  ${CC:-cc} -std=c11 ${CFLAGS:--O2 -g} -Wall -Wextra -Iinclude -Iengine $(pkg-config --cflags $DP libevent libcurl) \
    -o "$BUILD/bench/deliver_bench" tests/bench/deliver_bench.c "$BUILD/obj/dispatch.o" "$BUILD/libjourneyd.a" \
    $(pkg-config --libs $DP libevent libcurl) -lm -lpthread &&
  echo && echo "== delivery ==" && "$BUILD/bench/deliver_bench" -n "${BENCH_DELIVERIES:-20000}" -c 64
) || echo "bench: deliver_bench failed (see above)"
