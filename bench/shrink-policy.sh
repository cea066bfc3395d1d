#!/usr/bin/env bash
# Shrink-on-load policy: for every JPEG × width × margin, the time of the
# thumbnail in process (examples/shrink_policy.rs, one thread, interleaved)
# and its PSNR/SSIM against the full-resolution reference
# (examples/quality.rs). Prints a table per case and a summary per margin
# (median over the cases of time and PSNR relative to the 200 % margin).
#
#   MEDIAFLOW_BENCH_IMAGES=../shared/fixtures bench/shrink-policy.sh
#   WIDTHS=256,512,1024 MARGINS=100,125,150,200 RUNS=5 NO_BUILD=1
set -euo pipefail
source "$(dirname "$0")/lib/images.sh"
WIDTHS=${WIDTHS:-256,512,1024}
MARGINS=${MARGINS:-100,125,150,200}
RUNS=${RUNS:-5}
if [ "${NO_BUILD:-}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --quiet --example shrink_policy --example quality --example synth)
fi
BIN="$ROOT/target/release/examples"
DIR="$OUT/shrink-policy"
rm -rf "$DIR" && mkdir -p "$DIR"
SOURCES=()
if [ -n "${MEDIAFLOW_BENCH_IMAGES:-}" ]; then
  for f in "$MEDIAFLOW_BENCH_IMAGES"/*.jpg; do
    # DCT scaling only helps sources several times the target: skip small ones.
    python3 - "$f" <<'PY' && SOURCES+=("$f")
import struct, sys
d = open(sys.argv[1], "rb").read()
i = 2
while i < len(d):
    m, n = d[i + 1], struct.unpack(">H", d[i + 2:i + 4])[0]
    if m in (0xC0, 0xC1, 0xC2):
        h, w, comps = struct.unpack(">HHB", d[i + 5:i + 10])
        sys.exit(0 if w * h >= 4_000_000 and comps == 3 else 1)
    i += 2 + n
sys.exit(1)
PY
  done
else
  dir="$GEN/synth"
  [ -s "$dir/S5_synth_4000x3000.webp" ] || "$BIN/synth" set "$dir" >/dev/null
  SOURCES=("$dir/S1_synth_6000x4000.jpg" "$dir/S2_synth_5600x3700_prog.jpg" "$dir/S3_synth_4000x3000_prog.jpg")
fi
echo "# $(machine_line); $(cd "$ROOT" && git rev-parse --short HEAD); runs $RUNS"
"$BIN/shrink_policy" --out "$DIR" --widths "$WIDTHS" --margins "$MARGINS" --runs "$RUNS" "${SOURCES[@]}" >"$DIR/times.tsv"
: >"$DIR/quality.tsv"
for f in "${SOURCES[@]}"; do
  mapfile -t outs < <(awk -F'\t' -v s="$f" '$1 == s {print $8}' "$DIR/times.tsv")
  "$BIN/quality" "$f" "${outs[@]}" >>"$DIR/quality.tsv"
done
python3 - "$DIR/times.tsv" "$DIR/quality.tsv" <<'PY'
import os, statistics, sys
times = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
quality = {os.path.abspath(l.split("\t")[0]): l.rstrip("\n").split("\t") for l in open(sys.argv[2])}
rows = {}
print("| source | width | margin | DCT scale | decoded | ms (median) | PSNR dB | SSIM |")
print("|---|---:|---:|---|---|---:|---:|---:|")
for src, width, margin, scale, decoded, med, _mn, out in times:
    q = quality[os.path.abspath(out)]
    psnr, ssim = float(q[4]), float(q[5])
    rows[(src, width, int(margin))] = (float(med), psnr, ssim)
    print(f"| {os.path.basename(src)} | {width} | {margin} % | {scale} | {decoded} | {float(med):.1f} | {psnr:.2f} | {ssim:.4f} |")
margins = sorted({m for _, _, m in rows})
ref = max(margins)
print()
print(f"| margin | time vs {ref} % (median of cases) | PSNR − {ref} % dB (median / worst) | cases below {ref} % by > 1 dB |")
print("|---:|---:|---:|---:|")
for m in margins:
    keys = [k for k in rows if k[2] == m]
    ratio = statistics.median(rows[k][0] / rows[(k[0], k[1], ref)][0] for k in keys)
    deltas = [rows[k][1] - rows[(k[0], k[1], ref)][1] for k in keys]
    print(f"| {m} % | {ratio:.2f}× | {statistics.median(deltas):+.2f} / {min(deltas):+.2f} | {sum(d < -1 for d in deltas)} of {len(deltas)} |")
PY
