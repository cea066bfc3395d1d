#!/usr/bin/env bash
# Soak test: starts a release MediaFlow (filesystem store, or SeaweedFS with
# SOAK_BACKEND=s3), drives mixed traffic for SOAK_SECONDS (default 120) with
# SOAK_CONCURRENCY clients (default 16), checks every answer, and reports
# throughput, errors (must be 0) and the server's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SOAK_SECONDS:-120}
concurrency=${SOAK_CONCURRENCY:-16}
backend=${SOAK_BACKEND:-fs}

cargo build --release --quiet --bin mediaflow --example soak
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ $backend == s3 ]] && scripts/seaweedfs.sh stop "$work/weed" || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(scripts/free-ports.py 1)
env_args=(PORT="$port" BIND_ADDR=127.0.0.1 DATA_DIR="$work/data" RUST_LOG=warn API_KEY=soak-key
  SIGNING_SECRET=soak-signing-secret-0123)
if [[ $backend == s3 ]]; then
  scripts/setup.sh
  mkdir -p "$work/weed"
  scripts/seaweedfs.sh start "$work/weed" >/dev/null
  # shellcheck disable=SC1091
  source "$work/weed/env"
  env_args+=(S3_BUCKET="$MEDIAFLOW_TEST_S3_BUCKET" S3_ENDPOINT="$MEDIAFLOW_TEST_S3_ENDPOINT"
    AWS_ACCESS_KEY_ID="$MEDIAFLOW_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$MEDIAFLOW_TEST_S3_SECRET_KEY")
fi
env "${env_args[@]}" target/release/mediaflow >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
status=0
API_KEY=soak-key target/release/examples/soak "http://127.0.0.1:$port" "$seconds" "$concurrency" || status=$?
peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$server/status")
echo "server peak RSS: ${peak} MiB (backend $backend, $concurrency clients, $seconds s)"
if grep -q '"level":"ERROR"\|ERROR' "$work/server.log"; then
  echo "server logged errors:"; grep -m 20 'ERROR' "$work/server.log"; status=1
fi
exit $status
