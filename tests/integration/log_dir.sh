#!/bin/sh
# log_dir: the event log in its own directory (another disk), and the checks that keep a
# changed log_dir from skipping records the store has not taken in.
set -u
B=${1:-build}/journeyd
T=$(mktemp -d)
. "$(dirname "$0")/../free_port.sh"
PORT=$(free_port)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$T"' EXIT
fail() { echo "log_dir: $*"; exit 1; }

cat >"$T/j.lua" <<'LUA'
local j = require "journey"
j.journey "trial" {
  entry = j.on("Signed Up"),
  j.stage "signed_up" { j.on("Project Created"):go "activated" },
  j.stage "activated" {},
}
LUA
start() { # DATA [LOGDIR] (none: DATA/log)
  $B serve -c "$T/j.lua" --listen 127.0.0.1:$PORT --data-dir "$1" ${2:+--log-dir "$2"} >"$T/serve.log" 2>&1 &
  PID=$!
  i=0
  until curl -sf "http://127.0.0.1:$PORT/livez" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 50 ] && fail "daemon did not start: $(tail -3 "$T/serve.log")"; sleep 0.1
  done
}
refused() { # DATA LOGDIR MESSAGE
  $B serve -c "$T/j.lua" --listen 127.0.0.1:$PORT --data-dir "$1" --log-dir "$2" >"$T/refused.log" 2>&1
  [ $? != 0 ] || fail "log dir $2 was not refused: $(tail -3 "$T/refused.log")"
  grep -q "$3" "$T/refused.log" || fail "refusal of $2 without '$3': $(cat "$T/refused.log")"
}
post() { curl -sf -X POST "http://127.0.0.1:$PORT/v1/track" -H 'Content-Type: application/json' -d "$1" >/dev/null || fail "post $1"; }
stage_of() { curl -sf "http://127.0.0.1:$PORT/v1/users/$1" | grep -o '"stage":"[a-z_]*"' | head -1; }

# 1. the log goes to L1, nothing to DATA/log
start "$T/data" "$T/L1"
post '{"userId":"u1","event":"Signed Up","messageId":"m1"}'
post '{"userId":"u2","event":"Signed Up","messageId":"m2"}'
ls "$T"/L1/*.log >/dev/null 2>&1 || fail "no log segment in L1: $(ls "$T/L1")"
[ -s "$T/L1/ID" ] || fail "L1 has no ID"
[ -e "$T/data/log" ] && fail "a log in the data directory too"
kill -TERM "$PID"; wait "$PID"; PID=

# 2. after a clean stop an empty directory takes over
start "$T/data" "$T/L2"
[ "$(stage_of u1)" = '"stage":"signed_up"' ] || fail "u1 after the move: $(stage_of u1)"
grep -q "a new log directory" "$T/serve.log" || fail "the move is not logged"
cmp -s "$T/L1/ID" "$T/L2/ID" && fail "L2 has L1's id"
post '{"userId":"u1","event":"Project Created","messageId":"m3"}'
kill -KILL "$PID"; wait "$PID" 2>/dev/null; PID=

# 3. after a crash an empty directory is refused: the last log may hold records
refused "$T/data" "$T/L3" "last stop was not clean"
[ -e "$T/L3/ID" ] && fail "the refused directory got an id"
# ... and so is the log from before the move
refused "$T/data" "$T/L1" "not the event log the store"

# 4. the right log replays what the crash left
start "$T/data" "$T/L2"
[ "$(stage_of u1)" = '"stage":"activated"' ] || fail "u1 after the crash: $(stage_of u1)"
[ "$(stage_of u2)" = '"stage":"signed_up"' ] || fail "u2 after the crash: $(stage_of u2)"
kill -TERM "$PID"; wait "$PID"; PID=

# 5. SIGTERM while a batch is on its way: the last checkpoint takes in the whole log, so
#    the move is taken, by the directory refused before too
batch='{"batch":['
i=0
while [ $i -lt 300 ]; do
  batch="$batch{\"type\":\"track\",\"userId\":\"b$i\",\"event\":\"Signed Up\",\"messageId\":\"bm$i\"},"
  i=$((i + 1))
done
batch="${batch%,}]}"
start "$T/data" "$T/L2"
curl -s -X POST "http://127.0.0.1:$PORT/v1/batch" -H 'Content-Type: application/json' -d "$batch" >/dev/null 2>&1 &
CURL=$!
kill -TERM "$PID"; wait "$PID"; PID=
wait "$CURL"
start "$T/data" "$T/L3"
[ "$(stage_of u1)" = '"stage":"activated"' ] || fail "u1 after the second move: $(stage_of u1)"
kill -TERM "$PID"; wait "$PID"; PID=

# 6. two shards move together
JOURNEYD_SHARDS=2 start "$T/sharded" "$T/L5"
post '{"userId":"s1","event":"Signed Up","messageId":"s1"}'
post '{"userId":"s2","event":"Signed Up","messageId":"s2"}'
kill -TERM "$PID"; wait "$PID"; PID=
[ -s "$T/L5/shard-0/ID" ] && [ -s "$T/L5/shard-1/ID" ] || fail "shard logs not in L5: $(ls -R "$T/L5")"
JOURNEYD_SHARDS=2 start "$T/sharded" "$T/L6"
[ "$(stage_of s1)" = '"stage":"signed_up"' ] || fail "s1 after the sharded move: $(stage_of s1)"
[ "$(stage_of s2)" = '"stage":"signed_up"' ] || fail "s2 after the sharded move: $(stage_of s2)"
kill -TERM "$PID"; wait "$PID"; PID=

# 7. a store from before the pairing (it names no log): a moved log_dir is refused, even
#    one with an id, until it has run once with DATA_DIR/log and stopped cleanly
start "$T/old"
post '{"userId":"o1","event":"Signed Up","messageId":"o1"}'
kill -TERM "$PID"; wait "$PID"; PID=
mdb_dump -a -p "$T/old/store" >"$T/dump" || fail "mdb_dump"
awk 'skip { skip = 0; next } /^database=/ { db = $0 } db == "database=meta" && ($0 == " log_id" || $0 == " log_closed") { skip = 1; next } { print }' \
  "$T/dump" >"$T/dump2"
grep -q "^ log_id$" "$T/dump2" && fail "log_id still in the dump"
rm -rf "$T/old/store" && mkdir "$T/old/store" && mdb_load -f "$T/dump2" "$T/old/store" 2>/dev/null || fail "mdb_load"
refused "$T/old" "$T/L7" "from before logs were paired"
refused "$T/old" "$T/L4" "from before logs were paired"
start "$T/old"
kill -TERM "$PID"; wait "$PID"; PID=
start "$T/old" "$T/L7"
[ "$(stage_of o1)" = '"stage":"signed_up"' ] || fail "o1 after its first move: $(stage_of o1)"
kill -TERM "$PID"; wait "$PID"; PID=

# 8. another store's log is refused, even after a clean stop
start "$T/other" "$T/L4"
kill -TERM "$PID"; wait "$PID"; PID=
refused "$T/data" "$T/L4" "not the event log the store"
echo "log_dir: ok"
