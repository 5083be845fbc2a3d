#!/usr/bin/env bash
# CI SLO gate: start the platform on free ports, load each demo service briefly with
# `modelserve loadtest`, and fail when any service misses its SLOs (the demo SLO file,
# gateway/loadgen/demo/slo.yaml, with the demo payloads next to it).
# Reports: loadtest-reports/<service>.html and <service>_stats.csv (`loadtest`'s default).
#   loadtests/ci_gate.sh                 # from anywhere; uses .venv and models/
#   LOADTEST_DURATION=15s LOADTEST_USERS=8 loadtests/ci_gate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
MODELS=${MODELS:-models}
DURATION=${LOADTEST_DURATION:-10s}
USERS=${LOADTEST_USERS:-8}
SERVICES=(sklearn-iris iris-classifier tf-digits triton-digits digits-classifier xgboost-iris
          lightgbm-iris)
REPORTS=loadtest-reports
LOG=$REPORTS/ci_gate_up.log
mkdir -p "$REPORTS"

if [[ ! -d "$MODELS/iris" || ! -d "$MODELS/digits-tf" || ! -d "$MODELS/triton" ||
      ! -d "$MODELS/xgboost-iris" || ! -d "$MODELS/lightgbm-iris" ]]; then
    "$BIN/modelserve" build-models --out "$MODELS"
fi

read -r PORT GRPC_PORT < <("$BIN/python" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')
URL="http://127.0.0.1:$PORT"

"$BIN/modelserve" up --host 127.0.0.1 --port "$PORT" --grpc-port "$GRPC_PORT" \
    --models-dir "$MODELS" >"$LOG" 2>&1 &
UP_PID=$!

stop_platform() {
    if kill -0 "$UP_PID" 2>/dev/null; then
        kill -TERM "$UP_PID"
        for _ in $(seq 60); do
            kill -0 "$UP_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$UP_PID" 2>/dev/null || true
    fi
    wait "$UP_PID" 2>/dev/null || true
}
trap stop_platform EXIT

ready() {
    "$BIN/python" -c 'import sys, httpx; sys.exit(httpx.get(sys.argv[1], timeout=1).status_code != 200)' \
        "$URL/v2/health/ready" 2>/dev/null
}
for _ in $(seq 360); do
    if ready; then break; fi
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        echo "ci_gate: modelserve up exited early:" >&2; cat "$LOG" >&2; exit 1
    fi
    sleep 0.5
done
if ! ready; then
    echo "ci_gate: platform not ready after 180 s:" >&2; cat "$LOG" >&2; exit 1
fi

failed=()
for service in "${SERVICES[@]}"; do
    if ! "$BIN/modelserve" loadtest "$service" --url "$URL" --grpc-url "127.0.0.1:$GRPC_PORT" \
        --users "$USERS" --duration "$DURATION" --reports "$REPORTS"; then
        failed+=("$service")
    fi
done

if (( ${#failed[@]} )); then
    echo "ci_gate: SLOs missed by: ${failed[*]} (reports in $REPORTS/)" >&2
    exit 1
fi
echo "ci_gate: all services met their SLOs"
