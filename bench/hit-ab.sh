#!/usr/bin/env bash
# Warm hits only, A/B: one or two MediaFlow binaries and nginx serving the
# same 20 variants, interleaved rounds, medians and ratios. For working on the
# hit path layer by layer without the whole peer harness; it reuses the data
# folder bench/http-load.sh left (run that once first).
#
#   bench/hit-ab.sh                                   # target/release/mediaflow vs nginx
#   B_BIN=/tmp/mediaflow-old bench/hit-ab.sh          # … and another build
#   ROUNDS=5 SECONDS_PER=7 CONNS=16 bench/hit-ab.sh
#   CEILING=1 bench/hit-ab.sh                         # … and bare hyper (examples/hit_ceiling.rs)
#
# Environment: A_BIN (default target/release/mediaflow), B_BIN, A_ENV / B_ENV
# ("K=V K=V", extra settings), ROUNDS=5, SECONDS_PER=7, CONNS=16,
# WORK=bench/out/http (the harness's folder), NGINX_WORKERS (default auto:
# one per core). wrk runs one thread, so on 2 cores each server has about
# one core to itself: NGINX_WORKERS=1 with A_ENV=WORKER_THREADS=1 compares
# the two at one thread each.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-$ROOT/bench/out/http}"
A_BIN="${A_BIN:-$ROOT/target/release/mediaflow}"
ROUNDS="${ROUNDS:-5}"
SECS="${SECONDS_PER:-7}"
CONNS="${CONNS:-16}"
[ -f "$WORK/paths/warm-mediaflow" ] || { echo "no $WORK/paths/warm-mediaflow: run bench/http-load.sh once" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx" >&2; exit 1; }

mapfile -t PORTS < <(python3 "$ROOT/scripts/free-ports.py" 3)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

declare -A PID
# CPU time ("user system", in clock ticks) of a server: the process and, for
# nginx, its workers. Throughput on 2 shared cores moves by ±15 % from run
# to run with whatever else runs; CPU per request moves far less, so both
# are reported, and its split says whether the kernel or the server's own
# code grew.
cpu_ticks() {
  local user=0 sys=0 p u s
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$((user + u)) sys=$((sys + s))
  done
  echo "$user $sys"
}
start_mf() { # name binary port env
  local log="$WORK/logs/hit-ab-$1.log"
  # shellcheck disable=SC2086
  env DATA_DIR="$WORK/mediaflow-data" PORT="$3" BIND_ADDR=127.0.0.1 STORAGE_CONFIG_PATH="$ROOT/bench/profiles.yaml" \
    LOG_FORMAT=json RUST_LOG=warn $4 "$2" >"$log" 2>&1 &
  PIDS+=($!)
  PID[$1]=$!
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$3/health" >/dev/null && return 0; sleep 0.1; done
  echo "$1 did not start; see $log" >&2; exit 1
}
NG="$WORK/nginx"
sed -E "s/listen 127.0.0.1:[0-9]+;/listen 127.0.0.1:${PORTS[2]};/; s/^worker_processes .*;/worker_processes ${NGINX_WORKERS:-auto};/" \
  "$NG/nginx.conf" >"$NG/hit-ab.conf"
nginx -p "$NG" -c "$NG/hit-ab.conf" -g "daemon off; user root;" 2>"$WORK/logs/hit-ab-nginx.log" &
PIDS+=($!)
PID[nginx]=$!
start_mf a "$A_BIN" "${PORTS[0]}" "${A_ENV:-}"
NAMES=(a nginx)
declare -A URL=([a]="http://127.0.0.1:${PORTS[0]}" [nginx]="http://127.0.0.1:${PORTS[2]}")
declare -A LIST=([a]="$WORK/paths/warm-mediaflow" [nginx]="$WORK/paths/warm-nginx")
if [ -n "${B_BIN:-}" ]; then
  start_mf b "$B_BIN" "${PORTS[1]}" "${B_ENV:-}"
  NAMES+=(b)
  URL[b]="http://127.0.0.1:${PORTS[1]}"
  LIST[b]="$WORK/paths/warm-mediaflow"
fi
if [ -n "${CEILING:-}" ]; then
  (cd "$ROOT" && cargo build -q --release --example hit_ceiling)
  mapfile -t CP < <(python3 "$ROOT/scripts/free-ports.py" 1)
  "$ROOT/target/release/examples/hit_ceiling" "${CP[0]}" &
  PIDS+=($!)
  PID[ceiling]=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${CP[0]}/x" >/dev/null && break; sleep 0.1; done
  NAMES+=(ceiling)
  URL[ceiling]="http://127.0.0.1:${CP[0]}"
  LIST[ceiling]="$WORK/paths/ceiling"
  echo /x >"${LIST[ceiling]}"
fi
# Warm every variant into memory and check the bytes against nginx's copy.
mapfile -t MF_PATHS <"$WORK/paths/warm-mediaflow"
mapfile -t NG_PATHS <"$WORK/paths/warm-nginx"
for n in "${NAMES[@]}"; do
  [ "$n" = nginx ] || [ "$n" = ceiling ] && continue
  for i in "${!MF_PATHS[@]}"; do
    cmp -s <(curl -fs "${URL[$n]}${MF_PATHS[$i]}") <(curl -fs "${URL[nginx]}${NG_PATHS[$i]}") ||
      { echo "$n: ${MF_PATHS[$i]} differs from nginx's copy" >&2; exit 1; }
  done
done

declare -A RES CPU
TICK=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  order=("${NAMES[@]}")
  [ $((r % 2)) -eq 0 ] && order=($(printf '%s\n' "${NAMES[@]}" | tac))
  for n in "${order[@]}"; do
    read -r u0 s0 < <(cpu_ticks "${PID[$n]}")
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$ROOT/bench/lib/paths.lua" "${URL[$n]}" -- "${LIST[$n]}" 1 | grep '^RESULT ')
    rps=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1][7:]); e=sum(r[k] for k in ("status_errors","connect_errors","read_errors","write_errors","timeouts")); print("%.0f %d" % (r["requests"]/(r["duration_us"]/1e6), e))' "$out")
    read -r u1 s1 < <(cpu_ticks "${PID[$n]}")
    read -r us uu su < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1][7:]); per=lambda t: t / int(sys.argv[6]) * 1e6 / r["requests"]; u, s = int(sys.argv[2]) - int(sys.argv[3]), int(sys.argv[4]) - int(sys.argv[5]); print("%.1f %.1f %.1f" % (per(u + s), per(u), per(s)))' "$out" "$u1" "$u0" "$s1" "$s0" "$TICK")
    echo "round $r  $n  ${rps% *} req/s  errors ${rps#* }  server CPU ${us} µs/request (user ${uu}, system ${su})"
    RES[$n]+="${rps% *} "
    CPU[$n]+="$us "
  done
done
python3 - $(for n in "${NAMES[@]}"; do r=${RES[$n]% } c=${CPU[$n]% }; echo "$n=${r// /,}=${c// /,}"; done) <<'EOF'
import statistics, sys
runs = {}
for arg in sys.argv[1:]:
    name, rps, cpu = arg.split("=")
    runs[name] = (statistics.median(map(float, rps.split(","))), statistics.median(map(float, cpu.split(","))))
ng_rps, ng_cpu = runs["nginx"]
# For CPU per request lower is better: x/nginx < 1 would mean x is cheaper.
for name, (rps, cpu) in runs.items():
    text = f"median {name}: {rps:.0f} req/s ({rps / ng_rps:.2f}x nginx), {cpu:.1f} µs CPU per request ({cpu / ng_cpu:.2f}x nginx)"
    if name == "a" and "b" in runs:
        text += f"; a/b {rps / runs['b'][0]:.2f}x req/s, {cpu / runs['b'][1]:.2f}x CPU"
    print(text)
EOF
