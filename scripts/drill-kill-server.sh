#!/usr/bin/env bash
# Fault drill: kill -9 the server under checkout load, restart it, and check that every receipt
# the tills saw acknowledged exists exactly once, that stock equals the sum of movements, and
# that every committed receipt's event was published and consumed exactly once.
#
#   scripts/drill-kill-server.sh [KILLS] [SECONDS_BETWEEN_KILLS]     (defaults: 10 and 2)
#
# Uses target/release/{savdo,savdo-bench} (or $CARGO_TARGET_DIR/release; BIN=dir overrides): build them first with
#   cargo build --release -p savdo -p savdo-bench
# Everything runs on loopback over SQLite in a temporary directory (or PostgreSQL when
# SAVDO_DRILL_DATABASE_URL names a fresh, empty database). Bounded: at most 20 kills, and the
# whole drill stops by itself; it prints a verdict and exits 0 on PASS, 1 on FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

KILLS=${1:-10}
GAP=${2:-2}
(( KILLS > 20 )) && KILLS=20
(( KILLS < 1 )) && KILLS=1
BIN=${BIN:-"${CARGO_TARGET_DIR:-target}/release"}
SAVDO="$BIN/savdo"
BENCH="$BIN/savdo-bench"
for b in "$SAVDO" "$BENCH"; do
  [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p savdo -p savdo-bench" >&2; exit 2; }
done

WORK=$(mktemp -d -t savdo-drill-XXXXXX)
DATA="$WORK/data"
mkdir -p "$DATA"
DB_URL=${SAVDO_DRILL_DATABASE_URL:-"sqlite://$DATA/savdo.sqlite"}
PORT=$(( 20000 + RANDOM % 20000 ))
URL="http://127.0.0.1:$PORT"
SERVER_PID=""
LOAD_PID=""

cleanup() {
  [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null || true
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

start_server() {
  SAVDO_LOG=warn SAVDO_WEBHOOKS_ALLOW_PRIVATE=1 "$SAVDO" --data-dir "$DATA" --database-url "$DB_URL" serve --listen "127.0.0.1:$PORT" \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server did not start; log:" >&2
  tail -20 "$WORK/server.log" >&2
  exit 2
}

TOKEN=$(SAVDO_LOG=warn "$SAVDO" --data-dir "$DATA" --database-url "$DB_URL" tenant create --name "Drill shop" \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[[ -n "$TOKEN" ]] || { echo "tenant create failed" >&2; exit 2; }
start_server

# The load runs a little longer than the kills take; tills retry the same receipt id through
# every outage, so each acknowledged receipt is one the server answered.
LOAD_SECONDS=$(( KILLS * (GAP + 1) + 5 ))
"$BENCH" load --url "$URL" --token "$TOKEN" --tills 4 --duration "$LOAD_SECONDS" \
  --acked-file "$WORK/acked.txt" >"$WORK/load.log" 2>&1 &
LOAD_PID=$!

sleep 2
for i in $(seq 1 "$KILLS"); do
  sleep "$GAP"
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  echo "kill $i/$KILLS: server $SERVER_PID killed"
  sleep 0.$(( RANDOM % 9 + 1 ))
  start_server
done

wait "$LOAD_PID" || { echo "load failed:"; cat "$WORK/load.log"; exit 1; }
LOAD_PID=""
cat "$WORK/load.log"

# The server stays up while verifying: its relay and consumers finish delivering. The wait is a
# bound, not a target (verify stops as soon as everything is delivered); CI runs this on debug
# builds right after the test suite, where the webhook deliveries' retries compete with the
# consumers for the one SQLite writer.
set +e
"$BENCH" verify --database-url "$DB_URL" --acked-file "$WORK/acked.txt" --wait-events 60
STATUS=$?
set -e
exit $STATUS
