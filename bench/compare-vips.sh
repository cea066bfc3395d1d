#!/usr/bin/env bash
# `mediaflow thumb` against `vipsthumbnail` (Debian libvips-tools) on the same
# images and settings, interleaved (mediaflow, vips, mediaflow, vips, …), with
# the median wall time per image, the ratio, output sizes and PSNR/SSIM of
# both against a common reference (examples/quality.rs).
#
#   bench/compare-vips.sh                                        # synthetic fallback set
#   MEDIAFLOW_BENCH_IMAGES=../shared/fixtures bench/compare-vips.sh
#
# Environment (all optional):
#   MEDIAFLOW_BENCH_IMAGES  folder of photographs (see bench/lib/images.sh)
#   RUNS=9                  interleaved rounds per case (one warm-up round is not counted)
#   WIDTHS="256 512 1024"   target widths
#   BOXES="256x256:center 256x256:smart"   cover crops instead of widths (vipsthumbnail
#                           -s 256x256 -m centre|attention); time only, no PSNR
#   FORMATS="webp"          any of webp jpeg png
#   QUALITY=90              webp/jpeg quality (png ignores it)
#   ONLY=L1                 only images whose file name contains this
#   VIPS_CONCURRENCY        passed through to vipsthumbnail (default: its own, one thread per core)
#   MEDIAFLOW_BIN           binary to test (default: target/release/mediaflow, built)
# Output: a table on stdout, bench/out/compare-vips.tsv (one line per case)
# and the thumbnails of the last round under bench/out/compare-vips/.
set -euo pipefail
source "$(dirname "$0")/lib/images.sh"

command -v vipsthumbnail >/dev/null || {
  echo "vipsthumbnail not found: apt-get install -y libvips-tools" >&2
  exit 1
}
build_tools
prepare_images

echo "# machine: $(machine_line)"
echo "# vipsthumbnail: $(vipsthumbnail --vips-version), VIPS_CONCURRENCY=${VIPS_CONCURRENCY:-default}"
echo "# mediaflow: $MEDIAFLOW_BIN ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "# images: $IMAGES_KIND"
exec python3 "$ROOT/bench/lib/compare_vips.py" \
  --mediaflow "$MEDIAFLOW_BIN" --quality-tool "$QUALITY_BIN" \
  --runs "${RUNS:-9}" --widths "${WIDTHS:-256 512 1024}" --formats "${FORMATS:-webp}" \
  --quality "${QUALITY:-90}" --only "${ONLY:-}" --boxes "${BOXES:-}" \
  --tiny "$ROOT/tests/fixtures/hopper_orientation_6.jpg" \
  --out "$OUT/compare-vips" --tsv "$OUT/compare-vips.tsv" "${IMAGES[@]}"
