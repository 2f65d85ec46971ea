#!/bin/sh
# The dashboard in a real headless browser (Debian's chromium): a daemon on a free
# loopback port runs examples/trial-onboarding, gets the example's events, and the page
# it serves at / must show that scenario's numbers once its scripts have run; a
# screenshot goes to BUILD/dashboard.png. Exit 77 (run.sh prints "skip") when chromium
# is not installed.
#
# The expected figures are worked out from the events by hand, not by the code that
# draws them. Timestamps are stripped, so everything happens at the daemon's "now" and
# no j.after (2d and more) comes due:
#   u1 identifies, signs up on the trial plan (enters signed_up: the welcome email),
#      views pricing twice (one messageId: a duplicate), creates a project (moves to
#      activated: the CRM webhook), invites a teammate (a score hook, no move) and
#      subscribes (the goal: converted, from activated).
#   u2 identifies and signs up on the trial plan (enters signed_up, stays there).
#   u3 signs up on the pro plan (the entry's where does not match: never enters).
#   -> journey: entered 2, active 1, converted 1 (50.0%), exited 0
#      signed_up: entered 2, now 1, moved on 1, timed out 0, exited 0, converted 0
#      activated: entered 1, now 0, converted 1; 50.0% of signed_up's entries
#      dormant:   entered 0
#      u1's trace: entered, action (welcome), moved, action (crm), converted = 5
#   Every window (1h too) holds all of it; u1's visits of signed_up and activated give a
#   time in stage; the drop-off alert (min_sample 50) has 1 person: it stays ok.
set -u
BUILD=${1:-build}
B=$BUILD/journeyd
EX=examples/trial-onboarding
CHROME=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROME" ]; then
  echo "skip dashboard: chromium is not installed (make deps installs it)"
  exit 77
fi
T=$(mktemp -d)
PID=""
PID2=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [ -n "$PID2" ] && kill "$PID2" 2>/dev/null && wait "$PID2" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
failed=0
ok() { echo "ok   dashboard: $*"; }
bad() { echo "FAIL dashboard: $*"; failed=1; }

. "$(dirname "$0")/../free_port.sh"

# start_daemon DIR [ENV=VALUE...]: starts journeyd serve, sets PORT, waits for /readyz
start_daemon() {
  dir=$1
  shift
  PORT=$(free_port)
  env "$@" "$B" serve -c "$EX/journeyd.lua" --listen "127.0.0.1:$PORT" --data-dir "$dir" >"$dir.log" 2>&1 &
  STARTED=$!
  i=0
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$STARTED" 2>/dev/null; then
      echo "FAIL dashboard: daemon did not start"; cat "$dir.log"; exit 1
    fi
    sleep 0.1
  done
}

dump() { # URL FILE
  "$CHROME" --headless=new --no-sandbox --disable-gpu --user-data-dir="$T/chrome" --virtual-time-budget=4000 \
    --dump-dom "$1" >"$2" 2>"$T/chrome.log"
}

start_daemon "$T/data"
PID=$STARTED
URL="http://127.0.0.1:$PORT"

# the example's events, without timestamps; the line that is not JSON is left out
grep '^{' "$EX/events.jsonl" | sed 's/"timestamp":"[^"]*",//' | while IFS= read -r ev; do
  kind=$(printf '%s' "$ev" | sed 's/.*"type":"\([a-z]*\)".*/\1/')
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/$kind" -H 'Content-Type: application/json' -d "$ev")
  [ "$code" = 200 ] || echo "FAIL dashboard: POST /v1/$kind answered $code"
done

curl -s "$URL/" | grep -q '<title>journeyd</title>' && ok "GET / serves the page" || bad "GET / does not serve the page"

dump "$URL/#user=u1" "$T/dom.html"
[ -s "$T/dom.html" ] || { bad "chromium dumped nothing: $(tail -n 5 "$T/chrome.log")"; exit 1; }
grep -q 'data-loaded="1"' "$T/dom.html" && ok "the page loaded the funnels" || bad "the page did not load: $(grep -o '<span id="status"[^<]*' "$T/dom.html")"

# expect ID VALUE: the element with that id shows exactly VALUE
expect() {
  if grep -q "id=\"$1\">$2<" "${DOM:-$T/dom.html}"; then
    ok "$1 = $2"
  else
    bad "$1: want $2, page shows '$(grep -o "id=\"$1\">[^<]*" "${DOM:-$T/dom.html}" | sed 's/.*>//')'"
  fi
}
J=f-trial_onboarding
expect $J-entered 2
expect $J-active 1
expect $J-converted 1
expect $J-conversion 50.0%
expect $J-exited 0
expect $J-signed_up-entered 2
expect $J-signed_up-now 1
expect $J-signed_up-moved_on 1
expect $J-signed_up-timed_out 0
expect $J-signed_up-exited 0
expect $J-signed_up-converted 0
expect $J-signed_up-dropoff 0.0%
expect $J-activated-entered 1
expect $J-activated-now 0
expect $J-activated-converted 1
expect $J-activated-from_previous 50.0%
expect $J-dormant-entered 0
expect trace-user u1
expect trace-count 5
grep -q 'drop-off of signed_up above 60.0% over 24h' "$T/dom.html" && ok "the alert is listed" || bad "the alert is not listed"
grep -q '>signed_up -&gt; activated on Project Created<' "$T/dom.html" && ok "the trace shows why u1 moved" ||
  bad "the trace lacks the move"
expect $J-alert-0 ok
curl -s "$URL/v1/journeys/trial_onboarding/funnel?window=1h" | grep -q '"source":"stats"' &&
  ok "the funnel comes from the engine's windowed analytics" || bad "the funnel is not from the analytics"
grep -q "id=\"$J-signed_up-time\">[^<–]" "$T/dom.html" && ok "time in stage shown for signed_up" ||
  bad "no time in stage for signed_up"

# the last hour holds the same numbers
dump "$URL/#window=1h" "$T/dom1h.html"
grep -q 'window 1h' "$T/dom1h.html" && ok "window 1h selected" || bad "window 1h not selected"
DOM=$T/dom1h.html
expect $J-entered 2
expect $J-converted 1
expect $J-signed_up-moved_on 1
expect $J-signed_up-dropoff 0.0%
expect $J-activated-from_previous 50.0%
DOM=

"$CHROME" --headless=new --no-sandbox --disable-gpu --user-data-dir="$T/chrome" --virtual-time-budget=4000 \
  --hide-scrollbars --window-size=1280,900 --screenshot="$BUILD/dashboard.png" "$URL/#user=u1" >/dev/null 2>&1
[ -s "$BUILD/dashboard.png" ] && ok "screenshot $BUILD/dashboard.png" || bad "no screenshot"

# with admin keys configured the data needs a key: the page asks for one
start_daemon "$T/keyed" JOURNEYD_ADMIN_KEYS=s3cret
PID2=$STARTED
dump "http://127.0.0.1:$PORT/" "$T/keyed.html"
grep -q 'id="auth" class="show"' "$T/keyed.html" && grep -q 'an admin key is required' "$T/keyed.html" &&
  ok "with admin keys the page asks for a key" || bad "with admin keys the page does not ask for a key"
curl -s -H 'Authorization: Bearer s3cret' "http://127.0.0.1:$PORT/v1/journeys/trial_onboarding/funnel" |
  grep -q '"journey":"trial_onboarding"' && ok "the key the page sends (Bearer) is accepted" || bad "Bearer key refused"

exit $failed
