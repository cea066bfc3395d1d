#!/usr/bin/env bash
# Checks build.rs's guard against a release binary without libjpeg-turbo's
# SIMD: with a `nasm` that mozjpeg-sys refuses (a fake one printing an old
# version, first on the PATH), a release build must stop with the fix, and
# MEDIAFLOW_ALLOW_NO_SIMD=1 must let it through with a warning. Uses its own
# target directory (`cargo check`, ~2-3 min on 2 cores); not run by CI, for
# time.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
printf '#!/bin/sh\necho "NASM version 0.1 (fake)"\n' >"$work/bin/nasm"
chmod +x "$work/bin/nasm"
export CARGO_TARGET_DIR="$work/target"
if PATH="$work/bin:$PATH" cargo check --release --lib >"$work/log" 2>&1; then
  echo "FAIL: a release build without SIMD went through" >&2
  exit 1
fi
grep -q 'was built without its SIMD code' "$work/log" || { cat "$work/log" >&2; echo "FAIL: not the SIMD error" >&2; exit 1; }
grep -q 'cargo clean --release -p mozjpeg-sys' "$work/log" || { echo "FAIL: the fix is not named" >&2; exit 1; }
MEDIAFLOW_ALLOW_NO_SIMD=1 PATH="$work/bin:$PATH" cargo check --release --lib >"$work/log" 2>&1 || {
  cat "$work/log" >&2; echo "FAIL: MEDIAFLOW_ALLOW_NO_SIMD=1 did not let it through" >&2; exit 1; }
grep -q 'built without SIMD' "$work/log" || { echo "FAIL: no warning with MEDIAFLOW_ALLOW_NO_SIMD=1" >&2; exit 1; }
echo "ok: a release build without SIMD stops with the fix; MEDIAFLOW_ALLOW_NO_SIMD=1 builds it with a warning"
