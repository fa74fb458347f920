#!/usr/bin/env bash
# Fault drill: JOWi Club down under loyalty sales. Tills make loyalty sales (card look-up, quote,
# receipt) against a real server whose tenant's JOWi Club integration points at the sandbox's
# simulator; JOWi is taken down (black-holed, then refusing), then brought back. Checks that no
# sale was refused, and that after recovery every sale's accrual reached JOWi's ledger exactly
# once (by receipt id) within a bounded wait.
#
#   scripts/drill-jowi-down.sh [OUTAGE_SECONDS] [MODE]     (defaults: 60 and both)
#
#   MODE: both (first half black-holed, second half refusing), blackhole or refuse.
#   OUTAGE_SECONDS is capped at 300; LONG=1 allows up to 1800 (real minutes of outage).
#   Environment: TILLS (4), BEFORE / AFTER (10 s of sales with JOWi up around the outage),
#   WAIT (seconds allowed for the accruals after the load; default 1.25 x min(BEFORE+OUTAGE, 600)
#   + 60, the accrual consumer's capped backoff plus the circuit breaker's cool-down),
#   PROFILE=debug to use debug builds, KEEP=1 to keep the work directory,
#   SAVDO_DRILL_DATABASE_URL=postgres://…/empty_db to run on PostgreSQL.
#
# Uses target/release/{savdo,savdo-bench,savdo-sandbox} (or $CARGO_TARGET_DIR/…): build them with
#   cargo build --release -p savdo -p savdo-bench -p savdo-sandbox
# Everything runs on loopback; the drill stops by itself, prints a verdict and exits 0 on PASS,
# 1 on FAIL (2 when it could not run).
set -euo pipefail
cd "$(dirname "$0")/.."

OUTAGE=${1:-60}
MODE=${2:-both}
MAX=300
[[ "${LONG:-0}" == 1 ]] && MAX=1800
(( OUTAGE > MAX )) && OUTAGE=$MAX
(( OUTAGE < 2 )) && OUTAGE=2
case "$MODE" in both|blackhole|refuse) ;; *) echo "MODE must be both, blackhole or refuse" >&2; exit 2 ;; esac
TILLS=${TILLS:-4}
BEFORE=${BEFORE:-10}
AFTER=${AFTER:-10}
BACKOFF=$(( BEFORE + OUTAGE ))
(( BACKOFF > 600 )) && BACKOFF=600
WAIT=${WAIT:-$(( BACKOFF * 5 / 4 + 60 ))}

BIN="${CARGO_TARGET_DIR:-target}/${PROFILE:-release}"
SAVDO="$BIN/savdo"
BENCH="$BIN/savdo-bench"
SANDBOX="$BIN/savdo-sandbox"
for b in "$SAVDO" "$BENCH" "$SANDBOX"; do
  [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p savdo -p savdo-bench -p savdo-sandbox" >&2; exit 2; }
done

WORK=$(mktemp -d -t savdo-jowi-drill-XXXXXX)
DATA="$WORK/data"
mkdir -p "$DATA"
DB_URL=${SAVDO_DRILL_DATABASE_URL:-"sqlite://$DATA/savdo.sqlite"}
PORT=$(( 20000 + RANDOM % 20000 ))
SB_PORT=$(( PORT + 1 ))
URL="http://127.0.0.1:$PORT"
SB_URL="http://127.0.0.1:$SB_PORT"
SERVER_PID=""
SANDBOX_PID=""

cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
  [[ -n "$SANDBOX_PID" ]] && kill "$SANDBOX_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

wait_port() { # port, name, log
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$2 did not start; log:" >&2
  tail -20 "$3" >&2
  exit 2
}

RUST_LOG=warn "$SANDBOX" --listen "127.0.0.1:$SB_PORT" >>"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
wait_port "$SB_PORT" sandbox "$WORK/sandbox.log"

TOKEN=$(SAVDO_LOG=warn "$SAVDO" --data-dir "$DATA" --database-url "$DB_URL" tenant create --name "Drill shop" \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[[ -n "$TOKEN" ]] || { echo "tenant create failed" >&2; exit 2; }
SAVDO_LOG=warn "$SAVDO" --data-dir "$DATA" --database-url "$DB_URL" serve --listen "127.0.0.1:$PORT" \
  >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_port "$PORT" server "$WORK/server.log"

echo "JOWi down drill: $TILLS tills; JOWi up ${BEFORE} s, down ${OUTAGE} s ($MODE), up ${AFTER} s; accruals within ${WAIT} s after"
"$BENCH" loyalty-load --url "$URL" --token "$TOKEN" --sandbox "$SB_URL" --tills "$TILLS" \
  --before "$BEFORE" --outage "$OUTAGE" --after "$AFTER" --down "$MODE" \
  --acked-file "$WORK/acked.txt" --report-file "$WORK/load.json" \
  || { echo "load failed; server log:"; tail -20 "$WORK/server.log"; echo "VERDICT: FAIL"; exit 1; }

# The server stays up while verifying: its loyalty consumer delivers the waiting accruals.
set +e
"$BENCH" loyalty-verify --sandbox "$SB_URL" --acked-file "$WORK/acked.txt" \
  --report-file "$WORK/load.json" --database-url "$DB_URL" --wait "$WAIT"
STATUS=$?
set -e
exit $STATUS
