#!/usr/bin/env bash
# HTTP load, side by side in one run on the same machine and images:
# - cold thumbnails for MediaFlow, IPX (npm `ipx`, sharp/libvips) and thumbor
#   (PyPI `thumbor`, Pillow): every request a variant never made before, of an
#   original no request has decoded lately: every photo is made into COLD_COPIES
#   byte-distinct copies (19 photos x 16 = 304 originals), request k asks for
#   original k mod N with a width (448..575) that changes every full pass;
# - warm hits (20 variants, 512 px q90 WebP) for MediaFlow against nginx
#   serving the very same bytes;
# - the peak RSS of each server with 32 concurrent cold requests of distinct
#   copies of one large source, one phase per source (20 MP L1, 16 MP
#   progressive L3);
# - each server's 512 px q90 WebP of every photo, its size checked and its
#   PSNR against a common reference.
# Rounds are interleaved (every server once per round, order rotating) and
# the summary gives medians and ratios. See bench/README.md.
#
#   bench/http-load.sh                                            # synthetic fallback set
#   MEDIAFLOW_BENCH_IMAGES=../shared/fixtures bench/http-load.sh
#
# Environment (all optional):
#   MEDIAFLOW_BENCH_IMAGES  folder of photographs (see bench/lib/images.sh): its every .jpg, .jpeg,
#                           .png and .webp is a cold photo
#   ROUNDS=3  COLD_SECONDS=15  WARM_SECONDS=10  RSS_SECONDS=20
#   COLD_CONNS=4  WARM_CONNS=16  RSS_CONNS=32     wrk connections (one wrk thread)
#   COLD_COPIES=16                               byte-distinct copies of every cold photo
#   RSS_SOURCES="L1_ L3_"  RSS_COPIES=128        the rss phases' sources (file-name prefixes in the
#                                                folder) and the copies of each
#   WARM_VARIANTS=20                             size of the warm set
#   SERVERS="mediaflow ipx thumbor nginx"        a subset to run
#   MEDIAFLOW_ENV="CACHE_MEMORY_MB=256,..."      extra settings for MediaFlow
#   MEDIAFLOW_BIN                                binary to test (default: target/release/mediaflow, built)
#   NO_BUILD=1                                   no cargo build: use MEDIAFLOW_BIN and
#                                                target/release/examples/{quality,synth} as they are
#   MEDIAFLOW_B_BIN / MEDIAFLOW_B_ENV            adds a second MediaFlow ("mediaflow-b": another build or
#                                                other settings, its own data dir with the same originals)
#                                                to every phase, for A/B tests
#
# Installs what it needs: wrk and nginx (apt-get, when root), IPX into
# bench/out/peers/ipx (npm), thumbor into bench/out/peers/thumbor-venv (pip).
# Every server listens on 127.0.0.1 on a free port and is stopped (by its
# process group) when the script ends, however it ends.
# Output: progress and a summary table on stdout; bench/out/http/ keeps the
# sources (about 1.3 GB with the fixtures), logs, summary.md, summary.tsv and
# results.json of the last run.
set -euo pipefail
source "$(dirname "$0")/lib/images.sh"

SERVERS=${SERVERS:-mediaflow ipx thumbor nginx}
PEERS="$OUT/peers"
mkdir -p "$PEERS"

need_apt() { # command package
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "# installing $2 (apt-get)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >"$PEERS/apt-$2.log" 2>&1 || {
      echo "apt-get install $2 failed, see $PEERS/apt-$2.log" >&2
      exit 1
    }
  else
    echo "$1 not found: sudo apt-get install -y $2" >&2
    exit 1
  fi
}

need_apt wrk wrk
[[ " $SERVERS " == *" nginx "* ]] && need_apt nginx nginx-light
if [[ " $SERVERS " == *" ipx "* ]] && [ ! -x "$PEERS/ipx/node_modules/.bin/ipx" ]; then
  command -v npm >/dev/null || need_apt npm npm
  echo "# installing ipx (npm) into $PEERS/ipx" >&2
  mkdir -p "$PEERS/ipx"
  [ -f "$PEERS/ipx/package.json" ] || echo '{"private": true}' >"$PEERS/ipx/package.json"
  (cd "$PEERS/ipx" && npm install --no-audit --no-fund ipx@3) >"$PEERS/npm.log" 2>&1 || {
    echo "npm install ipx failed, see $PEERS/npm.log" >&2
    exit 1
  }
fi
if [[ " $SERVERS " == *" thumbor "* ]] && [ ! -x "$PEERS/thumbor-venv/bin/thumbor" ]; then
  echo "# installing thumbor (pip) into $PEERS/thumbor-venv" >&2
  (python3 -m venv "$PEERS/thumbor-venv" && "$PEERS/thumbor-venv/bin/pip" install -q thumbor) >"$PEERS/pip.log" 2>&1 || {
    echo "pip install thumbor failed, see $PEERS/pip.log" >&2
    exit 1
  }
fi

build_tools
prepare_images

join() { local IFS=:; echo "$*"; }
MACHINE="machine: $(machine_line); images: $IMAGES_KIND"
echo "# $MACHINE"
echo "# mediaflow $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), ipx $(node -p "require('$PEERS/ipx/node_modules/ipx/package.json').version" 2>/dev/null || echo -), sharp $(node -p "require('$PEERS/ipx/node_modules/sharp/package.json').version" 2>/dev/null || echo -), thumbor $("$PEERS/thumbor-venv/bin/thumbor" --version 2>/dev/null | head -1 || echo -), $(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
[ ${#COLD[@]} -gt 0 ] || { echo "no cold photos found" >&2; exit 1; }
[ ${#RSS_SRCS[@]} -gt 0 ] || { echo "no rss source found (RSS_SOURCES=${RSS_SOURCES:-L1_ L3_})" >&2; exit 1; }
echo "# cold photos (${#COLD[@]}, x ${COLD_COPIES:-16} copies): $(for f in "${COLD[@]}"; do basename "$f"; done | tr '\n' ' ')"
for f in "${RSS_SRCS[@]}"; do echo "# rss source: $f"; done

# http_load.py stops its servers itself (on exit and on SIGINT/SIGTERM); this
# trap is the backstop if it dies harder: it ends the process groups of the
# PIDs it recorded, and nothing else.
PIDFILE="$OUT/http.pids"
: >"$PIDFILE"
stop_recorded() {
  local pid
  while read -r pid; do
    [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
  done <"$PIDFILE"
}
trap stop_recorded EXIT

mapfile -t PORTS < <(python3 "$ROOT/scripts/free-ports.py" 5)
python3 "$ROOT/bench/lib/http_load.py" \
  --work "$OUT/http" --mediaflow "$MEDIAFLOW_BIN" --profiles "$ROOT/bench/profiles.yaml" \
  --ipx "$PEERS/ipx" --thumbor "$PEERS/thumbor-venv/bin/thumbor" \
  --ports "$(IFS=,; echo "${PORTS[*]}")" --cold "$(join "${COLD[@]}")" --rss "$(join "${RSS_SRCS[@]}")" \
  --copies "${COLD_COPIES:-16}" --rss-copies "${RSS_COPIES:-128}" --warm-variants "${WARM_VARIANTS:-20}" \
  --servers "$SERVERS" --rounds "${ROUNDS:-3}" \
  --cold-seconds "${COLD_SECONDS:-15}" --warm-seconds "${WARM_SECONDS:-10}" --rss-seconds "${RSS_SECONDS:-20}" \
  --cold-conns "${COLD_CONNS:-4}" --warm-conns "${WARM_CONNS:-16}" --rss-conns "${RSS_CONNS:-32}" \
  --mf-env "${MEDIAFLOW_ENV:-}" --mf-b "${MEDIAFLOW_B_BIN:-}" --mf-b-env "${MEDIAFLOW_B_ENV:-}" --lua "$ROOT/bench/lib/paths.lua" --quality-tool "$QUALITY_BIN" --machine "$MACHINE" --pidfile "$PIDFILE"
