#!/usr/bin/env bash
# The browser test (examples/browser/test): the Uppy and plain-fetch example
# pages upload through MediaFlow in headless Chromium, on the filesystem and
# S3 backends. Installs what it needs, skipping what is there: Debian's
# chromium, Node.js/npm, the example's npm packages (package-lock.json).
#
# Reuses the SeaweedFS named by MEDIAFLOW_TEST_S3_* (scripts/test.sh exports
# them), else starts its own with scripts/seaweedfs.sh. Screenshots, server
# logs and the preflight counts land in target/browser/.
# `--prepare` installs and exits (scripts/test.sh runs it while cargo compiles).
# Without a working Chromium it prints "SKIPPED browser test: <why>", except
# under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  echo "browser-test: installing $* with apt-get"
  as_root apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
[[ -x ${CHROMIUM_PATH:-/usr/bin/chromium} ]] || missing+=(chromium fonts-liberation)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  # Not fatal here: the test says why it cannot run (and fails under CI).
  apt_install "${missing[@]}" || echo "browser-test: could not install ${missing[*]}" >&2
fi

# --prepare: only what installs (run by test.sh while cargo compiles).
prepare=0
[[ ${1:-} == --prepare ]] && prepare=1
((prepare)) || cargo build --quiet --bin mediaflow

cd examples/browser
# npm ci wipes node_modules; only when package-lock.json changed.
stamp=node_modules/.lock-sha256
sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$sum" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$sum" >"$stamp"
fi
if ((prepare)); then
  echo "browser-test: prepared (Chromium, Node.js, npm packages)"
  exit 0
fi
npm test
