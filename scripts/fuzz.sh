#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (FUZZ_SECONDS, default 60).
#
#   scripts/fuzz.sh [TARGET...]     # default: keys token range image
#
# The machine's stable toolchain builds the fuzzers with RUSTC_BOOTSTRAP=1
# (cargo-fuzz needs nightly-only flags). A crash leaves its input in
# fuzz/artifacts/TARGET/; turn it into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=("$@")
((${#targets[@]})) || targets=(keys token range image)
export RUSTC_BOOTSTRAP=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t (${seconds}s)"
  if ! cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    2>"/tmp/fuzz-$t.log"; then
    echo "!! $t found a failure: see fuzz/artifacts/$t and /tmp/fuzz-$t.log"
    status=1
  fi
  grep -E "^(#[0-9]+|Done).*(cov|exec)" "/tmp/fuzz-$t.log" | tail -n 1 || true
done
exit $status
