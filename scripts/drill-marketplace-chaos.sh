#!/usr/bin/env bash
# Fault drill: the marketplace simulators (Uzum, Wildberries, Ozon) answer 429 and 5xx at random
# while stock documents flow; then the faults stop, and every mapped SKU's stock on every
# marketplace must equal ours (available − safety buffer) within a bounded wait.
#
#   scripts/drill-marketplace-chaos.sh [ERROR_RATE] [CHAOS_SECONDS]     (defaults: 0.4 and 150)
#
# `savdo-bench marketplace-chaos` does the work: the sandbox in its own process, a real
# `savdo serve` (SQLite in a temporary directory, or PostgreSQL with SAVDO_BENCH_DATABASE_URL)
# whose integrations point at the simulators, a products sync over the API, then stock
# documents from two back-office clients spread over CHAOS_SECONDS while the simulators' fault
# controls answer an injected 429, 500, 502 or 503 (in turn, every second) to ERROR_RATE of the
# requests. Ozon takes an item at most once per 2 minutes, so CHAOS_SECONDS under 120 leaves
# its stock requests untouched by faults.
# It fails too when a marketplace's stock calls never met a fault (nothing was proved there).
# SKUS (1000), CHANGES (5000) and WAIT (seconds after the faults stop, 300; at most 600)
# override the sizes.
# Uses $CARGO_TARGET_DIR/release (or target/release) savdo and savdo-bench:
#   cargo build --release -p savdo -p savdo-bench       (BIN=target/debug uses debug builds)
# Bounded: the whole drill is killed after CHAOS_SECONDS + WAIT + 600 s; it prints a verdict and
# exits 0 on PASS, 1 on FAIL (2: could not run).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:-0.4}
CHAOS=${2:-150}
(( CHAOS > 300 )) && CHAOS=300
(( CHAOS < 1 )) && CHAOS=1
SKUS=${SKUS:-1000}
CHANGES=${CHANGES:-5000}
WAIT=${WAIT:-300}
(( WAIT > 600 )) && WAIT=600
BIN=${BIN:-"${CARGO_TARGET_DIR:-target}/release"}
SAVDO="$BIN/savdo"
BENCH="$BIN/savdo-bench"
for b in "$SAVDO" "$BENCH"; do
  [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p savdo -p savdo-bench" >&2; exit 2; }
done

set +e
timeout --signal=INT --kill-after=15 $(( CHAOS + WAIT + 600 )) \
  "$BENCH" marketplace-chaos --savdo-bin "$SAVDO" --skus "$SKUS" --changes "$CHANGES" \
  --error-rate "$RATE" --chaos-secs "$CHAOS" --wait "$WAIT"
STATUS=$?
set -e
case $STATUS in
  0) exit 0 ;;
  1) exit 1 ;;
  124|130|137) echo "drill timed out"; echo "VERDICT: FAIL"; exit 1 ;;
  *) echo "drill could not run (exit $STATUS)"; echo "VERDICT: FAIL"; exit 1 ;;
esac
