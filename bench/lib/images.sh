# Sourced by the bench scripts: finds or makes the benchmark images.
#
# MEDIAFLOW_BENCH_IMAGES=DIR  a folder of real photographs (e.g. ../shared/fixtures,
#                             whose MANIFEST.tsv gives their sources and licences).
#                             Files are picked by name prefix (see pick_real).
# unset                       a synthetic, photograph-like set is generated once into
#                             bench/out/gen/synth (examples/synth.rs), plus the small
#                             committed tests/fixtures images.
#
# After `prepare_images`:
#   IMAGES       every source for the CLI comparison (JPEG, PNG, WebP), headline first
#   JPEGS        the 12–25 MP JPEGs used for cold HTTP thumbnails
#   BIG24        24 MP JPEG sources (the peak-RSS run)
#   IMAGES_KIND  "real" or "synthetic"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/bench/out"
GEN="$OUT/gen"

# Builds the release binary and the bench examples (cargo decides if anything changed).
build_tools() {
  (cd "$ROOT" && cargo build --release --quiet --bin mediaflow --example quality --example synth) || {
    echo "cargo build failed" >&2
    exit 1
  }
  MEDIAFLOW_BIN=${MEDIAFLOW_BIN:-$ROOT/target/release/mediaflow}
  QUALITY_BIN="$ROOT/target/release/examples/quality"
  SYNTH_BIN="$ROOT/target/release/examples/synth"
}

pick_real() { # prefix -> first matching file in MEDIAFLOW_BENCH_IMAGES
  local f
  for f in "$MEDIAFLOW_BENCH_IMAGES/$1"*; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

prepare_images() {
  IMAGES=()
  JPEGS=()
  BIG24=()
  mkdir -p "$GEN"
  if [ -n "${MEDIAFLOW_BENCH_IMAGES:-}" ]; then
    [ -d "$MEDIAFLOW_BENCH_IMAGES" ] || { echo "MEDIAFLOW_BENCH_IMAGES=$MEDIAFLOW_BENCH_IMAGES is not a folder" >&2; exit 1; }
    IMAGES_KIND=real
    local p f
    # L1: 20 MP baseline JPEG; L3/L4/L5: 12–16 MP progressive; L2: 8 MP progressive at 8 bpp;
    # D3: 4 MP PNG; D5: 12 MP WebP.
    for p in L1_ L3_ L4_ L5_ L2_ D3_ D5_; do
      f=$(pick_real "$p") && IMAGES+=("$f")
    done
    for p in L1_ L3_ L4_ L5_; do
      f=$(pick_real "$p") && JPEGS+=("$f")
    done
    # A 24 MP source from the 20 MP photograph: its edges mirrored to 6028x3982.
    if f=$(pick_real L1_); then
      local big="$GEN/L1x_$(basename "${f%.*}")_mirrored_6028x3982.jpg"
      [ -s "$big" ] || "$SYNTH_BIN" extend "$f" 6028 3982 "$big" >/dev/null
      BIG24+=("$big")
      IMAGES+=("$big")
      JPEGS+=("$big")
    fi
  else
    IMAGES_KIND=synthetic
    local dir="$GEN/synth"
    [ -s "$dir/S5_synth_4000x3000.webp" ] || "$SYNTH_BIN" set "$dir" >/dev/null
    IMAGES=("$dir/S1_synth_6000x4000.jpg" "$dir/S2_synth_5600x3700_prog.jpg" "$dir/S3_synth_4000x3000_prog.jpg"
      "$dir/S4_synth_2560x1600.png" "$dir/S5_synth_4000x3000.webp"
      "$ROOT/tests/fixtures/hopper_orientation_6.jpg" "$ROOT/tests/fixtures/flower.webp")
    JPEGS=("$dir/S1_synth_6000x4000.jpg" "$dir/S2_synth_5600x3700_prog.jpg" "$dir/S3_synth_4000x3000_prog.jpg")
    BIG24=("$dir/S1_synth_6000x4000.jpg")
  fi
  [ ${#IMAGES[@]} -gt 0 ] || { echo "no images found" >&2; exit 1; }
}

machine_line() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  echo "$(nproc) cores, $cpu, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
}
