#!/usr/bin/env bash
# The whole test suite, on both storage backends: installs what it needs,
# starts a throw-away SeaweedFS on free loopback ports, runs `cargo test`
# with its address in the environment, and stops it (by PID) at the end.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test uploads).
# The full suite (no arguments) then checks the container image with the
# debug binary `cargo test` just built (scripts/container.sh): skipped, loudly,
# where Podman cannot run; production images are built with --release.
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
cargo test "$@"

if (($#)); then
  echo "container test not run (arguments given); scripts/container.sh runs it"
  exit 0
fi
status=0
scripts/container.sh "${CARGO_TARGET_DIR:-target}/debug/mediaflow" || status=$?
# 77: this machine cannot run Podman; container.sh said why.
if ((status != 0 && status != 77)); then exit "$status"; fi
