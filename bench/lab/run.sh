#!/usr/bin/env bash
# Diagnosis accuracy of Sonde's live incident reports on the fault lab (tests/lab/README.md):
# every fault RUNS times on one lab (Sonde restarted per run), AC@1 / AC@3 / class accuracy and
# mean/max time from injection to report, as a Markdown table.
#
#   bench/lab/run.sh                   RUNS=3 runs of all seven faults (~25 min per round)
#   FAULTS=loss,dns RUNS=1 bench/lab/run.sh
#   CLUSTER=1 FAULTS=loss,cpu,slow-sql bench/lab/run.sh   the three-node lab through the hub
#
# Environment: SONDE_BIN (target/release/sonde if built, else target/debug/sonde), RUNS (3),
# FAULTS (all), BASELINE (s, 90), TIMEOUT (s, 120), OUT (bench/lab/results.md; all per-run
# results next to it as results.json, Sonde logs are not kept). Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${SONDE_BIN:-}" ]]; then
  SONDE_BIN=$ROOT/target/release/sonde
  [[ -x $SONDE_BIN ]] || SONDE_BIN=$ROOT/target/debug/sonde
fi
[[ -x $SONDE_BIN ]] || { echo "no sonde binary at $SONDE_BIN: build it or set SONDE_BIN" >&2; exit 1; }
cluster=()
[[ -n ${CLUSTER:-} ]] && cluster=(--cluster)
exec python3 "$ROOT/tests/lab/lab.py" bench --sonde "$SONDE_BIN" "${cluster[@]}" \
  --runs "${RUNS:-3}" --faults "${FAULTS:-all}" \
  --baseline "${BASELINE:-90}" --timeout "${TIMEOUT:-120}" \
  --out "${OUT:-$ROOT/bench/lab/results.md}"
