#!/usr/bin/env bash
# Fault drill: kill -9 the fiscal gateway mid-receipt, restart it, and check that the printer
# printed every acknowledged sale exactly once and nothing else: no receipt printed twice, none
# missing.
#
#   scripts/drill-kill-fiscal.sh [KILLS] [SECONDS_BETWEEN_KILLS]     (defaults: 10 and 1)
#
# The printer is the ATOL simulator of a separate savdo-sandbox process (it outlives the kills
# and lists every document it printed); each print takes 20 ms there, so kills land while tasks
# are in flight. Uses $CARGO_TARGET_DIR/release (or target/release) savdo-fiscal, savdo-sandbox
# and savdo-bench: cargo build --release -p savdo-fiscal -p savdo-sandbox -p savdo-bench
# (BIN=target/debug uses debug builds). Bounded: at most 20 kills; prints a verdict and exits 0
# on PASS, 1 on FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

KILLS=${1:-10}
GAP=${2:-1}
(( KILLS > 20 )) && KILLS=20
(( KILLS < 1 )) && KILLS=1
BIN=${BIN:-"${CARGO_TARGET_DIR:-target}/release"}
FISCAL="$BIN/savdo-fiscal"
SANDBOX="$BIN/savdo-sandbox"
BENCH="$BIN/savdo-bench"
for b in "$FISCAL" "$SANDBOX" "$BENCH"; do
  [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p savdo-fiscal -p savdo-sandbox -p savdo-bench" >&2; exit 2; }
done

WORK=$(mktemp -d -t savdo-fiscal-drill-XXXXXX)
PORT=$(( 20000 + RANDOM % 20000 ))
SPORT=$(( PORT + 1 ))
URL="http://127.0.0.1:$PORT"
SURL="http://127.0.0.1:$SPORT"
GW_PID=""
SB_PID=""
LOAD_PID=""

cleanup() {
  for p in "$LOAD_PID" "$GW_PID" "$SB_PID"; do
    [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1; logs:" >&2
  tail -20 "$WORK"/*.log >&2
  exit 2
}

cat >"$WORK/fiscal.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/journal"
answer_wait_ms = 2000
retry_initial_ms = 50
retry_max_ms = 500

[[devices]]
id = "drill-0"
driver = "atol"
url = "$SURL/atol"
timeout_ms = 2000
TOML

start_gateway() {
  RUST_LOG=warn "$FISCAL" --config "$WORK/fiscal.toml" >>"$WORK/fiscal.log" 2>&1 &
  GW_PID=$!
  wait_port "$PORT"
}

RUST_LOG=warn "$SANDBOX" --listen "127.0.0.1:$SPORT" >>"$WORK/sandbox.log" 2>&1 &
SB_PID=$!
wait_port "$SPORT"
curl -fsS -X POST "$SURL/_control/atol/seed" -H 'content-type: application/json' \
  -d '{"print_ms": 20}' >/dev/null
start_gateway
curl -fsS -X POST "$URL/v1/devices/drill-0/shift/open" -H 'content-type: application/json' \
  -d '{"cashier": "Drill"}' >/dev/null

# Two clients share the one printer; each retries the same receipt id until answered.
LOAD_SECONDS=$(( KILLS * (GAP + 1) + 3 ))
"$BENCH" fiscal-load --url "$URL" --devices drill-0,drill-0 --duration "$LOAD_SECONDS" \
  --acked-file "$WORK/acked.txt" --sent-file "$WORK/sent.txt" >"$WORK/load.log" 2>&1 &
LOAD_PID=$!

sleep 1
for i in $(seq 1 "$KILLS"); do
  sleep "$GAP"
  kill -9 "$GW_PID" 2>/dev/null || true
  wait "$GW_PID" 2>/dev/null || true
  echo "kill $i/$KILLS: gateway $GW_PID killed"
  sleep 0.$(( RANDOM % 5 + 1 ))
  start_gateway
done

wait "$LOAD_PID" || { echo "load failed:"; cat "$WORK/load.log"; exit 1; }
LOAD_PID=""
cat "$WORK/load.log"

set +e
"$BENCH" fiscal-verify --url "$URL" --sandbox "$SURL" --acked-file "$WORK/acked.txt" \
  --sent-file "$WORK/sent.txt" --wait 60
STATUS=$?
set -e
exit $STATUS
