#!/bin/sh
# HTTP ingest: wrk against a running `journeyd serve` on loopback (load generator on the
# same 2-core machine): /v1/track one event per request (32 and 128 connections) and
# /v1/batch with 100 events.
# Prints requests/s, events/s and latency percentiles. Bounded: 8 s per run.
#   sh tests/bench/http.sh BUILD
set -u
BUILD=${1:-build}
HERE=$(dirname "$0")
DUR=${BENCH_HTTP_SECONDS:-8}
if ! command -v wrk > /dev/null; then
  echo "http bench: wrk is not installed (make deps installs it)"
  exit 0
fi
DATA=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
# a few candidate ports: one may be taken
for try in 1 2 3 4 5; do
  PORT=$((20000 + ($$ * 7 + try * 1013) % 20000))
  rm -rf "$DATA/data"
  # ingest only: delivery off (the example's channels point at loopback, refused, so
  # every action would be a dead letter; deliveries are measured by deliver_bench)
  JOURNEYD_DELIVERY=off "$BUILD/journeyd" serve -c examples/trial-onboarding/journeyd.lua --listen 127.0.0.1:$PORT --data-dir "$DATA/data" \
    > "$DATA/serve.log" 2>&1 &
  PID=$!
  i=0
  until curl -s "http://127.0.0.1:$PORT/livez" > /dev/null 2>&1 || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
  curl -s "http://127.0.0.1:$PORT/livez" > /dev/null 2>&1 && break
  kill $PID 2>/dev/null
  wait $PID 2>/dev/null
  PID=
done
if [ -z "$PID" ]; then
  echo "http bench: journeyd serve did not start:"
  tail -n 5 "$DATA/serve.log"
  exit 0
fi
run() { # name script connections events-per-request
  out=$(wrk -t1 -c"$3" -d"${DUR}s" -s "$HERE/$2" --latency "http://127.0.0.1:$PORT/" 2>&1)
  rps=$(printf '%s\n' "$out" | sed -n 's/^Requests\/sec: *//p')
  p50=$(printf '%s\n' "$out" | awk '$1 == "50%" { print $2 }')
  p99=$(printf '%s\n' "$out" | awk '$1 == "99%" { print $2 }')
  errs=$(printf '%s\n' "$out" | sed -n 's/.*Non-2xx or 3xx responses: *//p')
  printf '%-34s %10.0f %12.0f %9s %9s %s\n' "$1" "$rps" "$(awk -v r="$rps" -v k="$4" 'BEGIN { print r * k }')" "$p50" "$p99" "${errs:+non-2xx: $errs}"
}
echo
echo "HTTP ingest (wrk, ${DUR}s each, 1 wrk thread on the same machine)"
printf '%-34s %10s %12s %9s %9s\n' "" "req/s" "events/s" "p50" "p99"
run "POST /v1/track, 1 event, 32 conns" track.lua 32 1
run "POST /v1/track, 1 event, 128 conns" track.lua 128 1
run "POST /v1/batch, 100 events, 8 conns" batch.lua 8 100
