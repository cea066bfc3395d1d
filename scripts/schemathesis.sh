#!/usr/bin/env bash
# Fuzzes the running service against its own OpenAPI description with
# schemathesis (PyPI): no 5xx, and every response matches the schema.
#
#   scripts/schemathesis.sh [extra schemathesis args]
#
# Starts target/debug/mediaflow (built if missing) on a free loopback port with
# a throw-away DATA_DIR and no API key (so every handler is reachable), and
# stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v schemathesis >/dev/null 2>&1; then
  python3 -m pip install --quiet 'schemathesis>=4,<5' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'schemathesis>=4,<5'
fi
[[ -x target/debug/mediaflow ]] || cargo build --quiet
work=$(mktemp -d)
port=$(scripts/free-ports.py 1)
# Real originals where the examples in the description point, so requests
# reach the image pipeline, not only the 404 paths.
for id in sample sample3; do
  shard=$(printf %s "$id" | sha1sum | cut -c1-2)
  mkdir -p "$work/data/originals/photos/$shard"
  cp tests/fixtures/flower.webp "$work/data/originals/photos/$shard/$id"
done
PORT=$port BIND_ADDR=127.0.0.1 DATA_DIR="$work/data" RUST_LOG=warn LOG_FORMAT=json \
  SIGNING_SECRET=schemathesis-signing-secret target/debug/mediaflow >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
status=0
schemathesis run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" --workers 2 --seed 1 --no-color "$@" || status=$?
if ((status)); then
  echo "--- server log (last 40 lines) ---"
  tail -n 40 "$work/server.log"
fi
exit $status
