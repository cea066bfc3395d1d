#!/usr/bin/env bash
# Video posters and proxies: MediaFlow against the ffmpeg CLI doing the same
# work by hand, in one run on this machine.
#
#   bench/video.sh                       # a generated 1080p H.264 clip
#   VIDEO=path/to/clip.mp4 bench/video.sh
#
# - poster: N cold `/thumb` requests for distinct ids of one video (each an
#   ffprobe + a frame + a resize to 640 px JPEG + a store write) against N
#   runs of `ffmpeg -ss T -i clip -frames:v 1 -vf scale=640:-2 out.jpg`, the
#   least a user could do; wall time per poster and the ratio;
# - the CPU seconds the service and its children spent per poster;
# - proxy: one MP4 proxy job (a transcode for this clip) and its CPU seconds
#   per second of video.
#
# Environment: VIDEO, N=10 (posters), SECONDS_LONG=20 (length of the
# generated clip), MEDIAFLOW_BIN (default target/release/mediaflow, built).
# Output on stdout; the server log stays in bench/out/video/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out/video
rm -rf "$out" && mkdir -p "$out"
N=${N:-10}
bin=${MEDIAFLOW_BIN:-target/release/mediaflow}
[[ -n ${MEDIAFLOW_BIN:-} ]] || cargo build --release --quiet --bin mediaflow

video=${VIDEO:-}
if [[ -z $video ]]; then
  video=$out/clip.mp4
  # Keyframes every 8 s, as in camera footage: a poster at 1 s decodes 25 frames.
  ffmpeg -nostdin -loglevel error -f lavfi -i "testsrc2=s=1920x1080:r=25:d=${SECONDS_LONG:-20}" \
    -f lavfi -i "sine=frequency=440:duration=${SECONDS_LONG:-20}" -c:v libx264 -preset veryfast -g 200 \
    -pix_fmt yuv420p -c:a aac -shortest "$video"
fi
duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$video")

data=$out/data
for i in $(seq 1 "$N") proxy; do
  id=v$i
  shard=$(printf %s "$id" | sha1sum | cut -c1-2)
  mkdir -p "$data/originals/videos/$shard"
  cp "$video" "$data/originals/videos/$shard/$id"
done
port=$(scripts/free-ports.py 1)
DATA_DIR=$data PORT=$port BIND_ADDR=127.0.0.1 RUST_LOG=warn "$bin" serve >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

# utime+stime of the service and its waited-for children, in seconds.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15 + $16 + $17) / hz}' "/proc/$pid/stat"; }
now() { date +%s.%N; }

c0=$(cpu); t0=$(now)
for i in $(seq 1 "$N"); do
  code=$(curl -s -o "$out/poster-$i.jpg" -w '%{http_code}' "http://127.0.0.1:$port/thumb/video/v$i?width=640")
  [[ $code == 200 ]] || { echo "poster v$i: HTTP $code" >&2; tail -n 20 "$out/server.log" >&2; exit 1; }
done
t1=$(now); c1=$(cpu)
for i in $(seq 1 "$N"); do
  ffmpeg -nostdin -loglevel error -y -ss 1 -i "$video" -frames:v 1 -vf scale=640:-2 "$out/cli-$i.jpg"
done
t2=$(now)
python3 - "$N" "$t0" "$t1" "$t2" "$c0" "$c1" <<'EOF'
import sys
n, t0, t1, t2, c0, c1 = int(sys.argv[1]), *map(float, sys.argv[2:])
mf, cli = (t1 - t0) / n, (t2 - t1) / n
print(f"poster (cold, 640 px): MediaFlow {mf*1000:.0f} ms, ffmpeg CLI {cli*1000:.0f} ms, ratio {mf/cli:.2f}x; "
      f"service CPU {(c1 - c0) / n:.2f} s per poster")
EOF

c0=$(cpu); t0=$(now)
curl -s -o /dev/null "http://127.0.0.1:$port/proxy/video/vproxy?format=mp4"
for _ in $(seq 1 6000); do
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/proxy/video/vproxy?format=mp4")
  [[ $status == 200 ]] && break
  sleep 0.1
done
[[ $status == 200 ]] || { echo "the proxy was not made" >&2; exit 1; }
t1=$(now); c1=$(cpu)
python3 - "$duration" "$t0" "$t1" "$c0" "$c1" <<'EOF'
import sys
d, t0, t1, c0, c1 = map(float, sys.argv[1:])
print(f"proxy (mp4) of a {d:.0f} s clip: {t1 - t0:.1f} s wall, {(c1 - c0) / d:.2f} CPU s per video second")
EOF
