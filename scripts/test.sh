#!/usr/bin/env bash
# The whole test suite, on both storage backends: installs what it needs,
# starts a throw-away SeaweedFS on free loopback ports, runs `cargo test`
# with its address in the environment, then the browser test
# (scripts/browser-test.sh, on the same SeaweedFS), and stops it (by PID) at
# the end. Extra arguments go to `cargo test` (e.g. scripts/test.sh --test
# uploads) and skip the browser test; MEDIAFLOW_SKIP_BROWSER=1 skips it too.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
work=$(mktemp -d)
trap 'scripts/seaweedfs.sh stop "$work"; rm -rf "$work"' EXIT
scripts/seaweedfs.sh start "$work"
# shellcheck disable=SC1091
source "$work/env"
# S3 tests fail instead of skipping if the server is somehow missing.
export MEDIAFLOW_REQUIRE_S3=1
# Video tests fail instead of skipping if ffmpeg is somehow missing.
export MEDIAFLOW_REQUIRE_FFMPEG=1
cargo test "$@"
if [[ $# == 0 && ${MEDIAFLOW_SKIP_BROWSER:-0} != 1 ]]; then
  scripts/browser-test.sh
fi
