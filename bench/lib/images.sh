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
#   COLD         the photos of the cold HTTP phase: every still image of the folder (.jpg,
#                .jpeg, .png, .webp; not .gif), or the synthetic JPEGs
#   RSS_SRCS     the sources of the HTTP peak-RSS phases, one phase each: the files whose
#                names start with RSS_SOURCES (default "L1_ L3_": the 20 MP baseline and
#                the 16 MP progressive JPEG), or the 24 MP synthetic JPEG
#   IMAGES_KIND  "real" or "synthetic"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/bench/out"
GEN="$OUT/gen"

# Builds the release binary and the bench examples (cargo decides if anything changed).
# NO_BUILD=1: no cargo, the binaries already there are used (MEDIAFLOW_BIN, default
# target/release/mediaflow, and target/release/examples/{quality,synth}).
build_tools() {
  if [ "${NO_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin mediaflow --example quality --example synth) || {
      echo "cargo build failed" >&2
      exit 1
    }
  fi
  MEDIAFLOW_BIN=${MEDIAFLOW_BIN:-$ROOT/target/release/mediaflow}
  QUALITY_BIN="$ROOT/target/release/examples/quality"
  SYNTH_BIN="$ROOT/target/release/examples/synth"
  local f
  for f in "$MEDIAFLOW_BIN" "$QUALITY_BIN" "$SYNTH_BIN"; do
    [ -x "$f" ] || {
      echo "$f not found (NO_BUILD=${NO_BUILD:-0}): cargo build --release --bin mediaflow --example quality --example synth" >&2
      exit 1
    }
  done
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
  COLD=()
  RSS_SRCS=()
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
    # A 24 MP source from the 20 MP photograph: its edges mirrored to 6028x3982.
    if f=$(pick_real L1_); then
      local big="$GEN/L1x_$(basename "${f%.*}")_mirrored_6028x3982.jpg"
      [ -s "$big" ] || "$SYNTH_BIN" extend "$f" 6028 3982 "$big" >/dev/null
      IMAGES+=("$big")
    fi
    for f in "$MEDIAFLOW_BENCH_IMAGES"/*; do
      [ -f "$f" ] || continue
      case "${f,,}" in
        *.jpg | *.jpeg | *.png | *.webp) COLD+=("$f") ;;
      esac
    done
    for p in ${RSS_SOURCES:-L1_ L3_}; do
      f=$(pick_real "$p") && RSS_SRCS+=("$f")
    done
  else
    IMAGES_KIND=synthetic
    local dir="$GEN/synth"
    [ -s "$dir/S5_synth_4000x3000.webp" ] || "$SYNTH_BIN" set "$dir" >/dev/null
    IMAGES=("$dir/S1_synth_6000x4000.jpg" "$dir/S2_synth_5600x3700_prog.jpg" "$dir/S3_synth_4000x3000_prog.jpg"
      "$dir/S4_synth_2560x1600.png" "$dir/S5_synth_4000x3000.webp"
      "$ROOT/tests/fixtures/hopper_orientation_6.jpg" "$ROOT/tests/fixtures/flower.webp")
    COLD=("$dir/S1_synth_6000x4000.jpg" "$dir/S2_synth_5600x3700_prog.jpg" "$dir/S3_synth_4000x3000_prog.jpg")
    RSS_SRCS=("$dir/S1_synth_6000x4000.jpg")
  fi
  [ ${#IMAGES[@]} -gt 0 ] || { echo "no images found" >&2; exit 1; }
}

machine_line() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  echo "$(nproc) cores, $cpu, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
}
