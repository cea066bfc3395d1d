#!/usr/bin/env bash
# Estimated vs measured peak memory of single renders, one process each
# (examples/render_memory.rs). Usage: scripts/render-memory.sh DIR
# DIR holds the images: `render_memory bombs DIR` and `synth set DIR` make them.
set -euo pipefail
dir=${1:?usage: scripts/render-memory.sh DIR}
bin=${CARGO_TARGET_DIR:-target}/debug/examples/render_memory
cases=(
  "S1_synth_6000x4000.jpg 256 webp"
  "S1_synth_6000x4000.jpg 2048 webp"
  "S1_synth_6000x4000.jpg 4096 jpeg"
  "S2_synth_5600x3700_prog.jpg 256 webp"
  "S2_synth_5600x3700_prog.jpg 2048 png"
  "S3_synth_4000x3000_prog.jpg 1024 avif"
  "S4_synth_2560x1600.png 256 webp"
  "S4_synth_2560x1600.png 2048 webp"
  "S5_synth_4000x3000.webp 256 webp"
  "S5_synth_4000x3000.webp 2048 jpeg"
  "png_rgba16_10k.png 256 webp"
  "png_widest.png 256 webp"
  "png_slow.png 256 webp"
  "gif_canvas_10k.gif 256 webp"
  "gif_canvas_10k.gif 2048 png"
  "jpeg_10k_progressive.jpg 256 webp"
  "png_tall_300x20000.png 256 jpeg"
  "S4_synth_2560x1600.png 2560 webp"
  "S4_synth_2560x1600.png 2560 jpeg"
  "S4_synth_2560x1600.png 2560 png"
  "S4_synth_2560x1600.png 2560 avif"
  "webp_lossless_rgba_3000x2000.webp 256 webp"
  "webp_lossy_alpha_3000x2000.webp 256 png"
  "jpeg_ycck_3000x2000.jpg 256 webp"
)
for c in "${cases[@]}"; do
  set -- $c
  "$bin" "$dir/$1" "$2" "$3" 2>&1 || true
done
