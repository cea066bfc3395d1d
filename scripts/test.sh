#!/usr/bin/env bash
# The whole test suite, on both storage backends: installs what it needs,
# starts a throw-away SeaweedFS on free loopback ports, runs `cargo test`
# (library, binary, integration and doc tests; not the examples, which
# `cargo clippy --all-targets` checks) with its address in the environment, then the browser test
# (scripts/browser-test.sh, on the same SeaweedFS) and the container image
# check (scripts/container.sh, with the debug binary `cargo test` just built:
# skipped, loudly, where Podman cannot run; production images are built with
# --release), and stops SeaweedFS (by PID) at the end.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test api) and
# skip the browser and container checks; MEDIAFLOW_SKIP_BROWSER=1 skips the
# browser test.
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
# What the browser and container checks install (Chromium, npm packages,
# Podman, a base image, the image's ffmpeg layer) is downloads, not CPU: it
# runs while cargo compiles. One apt-get at a time, so the two in sequence.
prepared=
if ((!$#)); then
  prepare_log="$work/prepare.log"
  { if [[ ${MEDIAFLOW_SKIP_BROWSER:-0} != 1 ]]; then scripts/browser-test.sh --prepare; fi
    scripts/container.sh --prepare; } >"$prepare_log" 2>&1 &
  prepared=$!
fi
if (($#)); then
  cargo test "$@"
else
  # Not plain `cargo test`: it also builds every example at the test
  # profile (examples/quality.rs alone took 103 s of a CI build), which no
  # test runs; `cargo clippy --all-targets` (CI) already checks they compile.
  cargo test --lib --bins --tests
  cargo test --doc
fi

if (($#)); then
  echo "browser and container checks not run (arguments given): scripts/browser-test.sh, scripts/container.sh"
  exit 0
fi
# Its outcome is judged by the checks themselves (they install again, or
# skip loudly, whatever the preparation managed); its log is shown for the record.
wait "$prepared" || true
sed 's/^/prepare: /' "$prepare_log"
if [[ ${MEDIAFLOW_SKIP_BROWSER:-0} != 1 ]]; then
  scripts/browser-test.sh
fi
status=0
scripts/container.sh "${CARGO_TARGET_DIR:-target}/debug/mediaflow" || status=$?
# 77: this machine cannot run Podman; container.sh said why.
if ((status != 0 && status != 77)); then exit "$status"; fi
