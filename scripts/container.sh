#!/usr/bin/env bash
# Builds MediaFlow's runtime image (Containerfile.runtime) from a binary built
# on this machine, starts it with Podman and checks it as a user would run it:
#
#   scripts/container.sh [BINARY]     # default: target/release/mediaflow
#   scripts/container.sh --image IMAGE   # check an image built otherwise (e.g.
#                                        # from the multi-stage Containerfile)
#   scripts/container.sh --prepare       # only install the tools, make the base
#                                        # image and cache the image's apt-get
#                                        # layer (no binary needed: test.sh runs
#                                        # this while cargo compiles)
#
# - installs podman, buildah, runc and mmdebstrap with apt-get when missing;
# - base image: BASE_IMAGE if set, else debian:bookworm-slim when it is here or
#   can be pulled, else one built with mmdebstrap from this machine's apt
#   sources and kept as localhost/mediaflow-base:bookworm for the next run;
# - checks: the image's metadata (non-root user, volume, port, health check),
#   no compiler, curl or source inside, ffmpeg present; without API_KEY and
#   ALLOW_ANONYMOUS it refuses to start and says why; with API_KEY /health
#   answers, `podman healthcheck run` passes, the process runs as uid 10001,
#   an image posted through the API lands in the mounted volume and its
#   thumbnail decodes to the right size; SIGTERM stops it with exit 0;
# - prints the build time and the image size, and removes what it started.
#
# Exit status: 0 passed, 1 a check failed, 77 skipped (this machine cannot run
# Podman; the reason is printed as "SKIPPED container test: ...").
#
# Environment: BASE_IMAGE, IMAGE (tag; default localhost/mediaflow:dev),
# FFMPEG=false (image without ffmpeg). Podman runs as root (via sudo when not
# root) with runc and the cgroupfs manager: crun fails on hybrid cgroup
# hierarchies and systemd is not always there. See docs/container.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

existing=
prepare=
if [[ ${1:-} == --prepare ]]; then
  prepare=1
  binary=
  image=localhost/mediaflow-prepare:dev
elif [[ ${1:-} == --image ]]; then
  existing=${2:?usage: container.sh --image IMAGE}
  image=$existing
else
  binary=${1:-${CARGO_TARGET_DIR:-target}/release/mediaflow}
  image=${IMAGE:-localhost/mediaflow:dev}
fi
local_base=localhost/mediaflow-base:bookworm
registry_base=docker.io/library/debian:bookworm-slim
ffmpeg=${FFMPEG:-true}
# Podman's default ulimits are higher than what root may set on some machines
# (the run then fails with "setrlimit ... operation not permitted").
ulimits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

started=$SECONDS
skip() {
  echo "" >&2
  echo "************************************************************" >&2
  echo "SKIPPED container test: $*" >&2
  echo "************************************************************" >&2
  exit 77
}
fail() { echo "container: FAILED: $*" >&2; exit 1; }
step() { echo "container: $*"; }
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo -n "$@"; fi; }
pm() { as_root podman --runtime runc --cgroup-manager cgroupfs "$@"; }

[[ -n $existing || -n $prepare || -x $binary ]] || fail "no binary at $binary (cargo build --release, or pass its path)"

# The two Containerfiles share their runtime stage; only one of them can be
# built here (the other needs a Rust image from a registry), so keep them equal.
runtime_stage() { awk '/^# --- runtime stage/{p=1;next} p' "$1" | grep -v '^COPY '; }
if ! diff <(runtime_stage Containerfile) <(runtime_stage Containerfile.runtime) >/dev/null; then
  diff <(runtime_stage Containerfile) <(runtime_stage Containerfile.runtime) >&2 || true
  fail "the runtime stages of Containerfile and Containerfile.runtime differ"
fi

# --- what this machine needs ---------------------------------------------------
[[ $(uname -s) == Linux ]] || skip "not Linux"
if [[ $(id -u) != 0 ]] && ! sudo -n true 2>/dev/null; then
  skip "Podman runs as root here, and this user is not root and has no password-less sudo"
fi
missing=()
for tool in podman buildah runc mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 || skip "${missing[*]} missing and no apt-get to install them"
  step "installing ${missing[*]} with apt-get"
  t=$SECONDS
  # No recommends: they pull crun, fuse-overlayfs and slirp4netns, none needed as root.
  { as_root apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; } || skip "apt-get could not install ${missing[*]}"
  step "installed in $((SECONDS - t)) s"
fi
pm info >/dev/null 2>&1 || skip "podman info fails: $(pm info 2>&1 | tail -n 1)"
# The binary runs on Debian bookworm's glibc (2.36) inside the image.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [[ -z $existing && -z $prepare && -n $glibc ]] && [[ $(printf '%s\n' "$glibc" 2.36 | sort -V | tail -n 1) != 2.36 ]]; then
  skip "$binary links against glibc $glibc, newer than the image's 2.36 (build on bookworm, or use the multi-stage Containerfile)"
fi

work=$(mktemp -d)
cid=
cleanup() {
  [[ -n $cid ]] && pm rm -f -v "$cid" >/dev/null 2>&1
  as_root rm -rf "$work"
}
trap cleanup EXIT

# --- base image ----------------------------------------------------------------
base_seconds=0
base=${BASE_IMAGE:-}
# An image to check is its own base for the build-context check below.
[[ -z $existing ]] || base=$existing
if [[ -z $base ]]; then
  t=$SECONDS
  # One base build at a time on a machine; the second run finds the first's.
  lock=/var/tmp/mediaflow-container-base.lock
  [[ -w $lock ]] || { as_root touch "$lock" && as_root chmod 666 "$lock"; }
  exec 9>>"$lock"
  flock 9
  if pm image exists "$registry_base"; then
    base=$registry_base
  elif pm image exists "$local_base"; then
    base=$local_base
  elif as_root timeout 120 podman pull -q "$registry_base" >"$work/pull.log" 2>&1; then
    base=$registry_base
  else
    step "no registry ($(tail -n 1 "$work/pull.log" | cut -c1-120)); building $local_base with mmdebstrap"
    # This machine's own Debian sources (its mirror or proxy), else Debian's.
    sources=()
    if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
      for f in /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources; do
        [[ -s $f ]] && grep -qv '^\s*\(#\|$\)' "$f" && sources+=("$f")
      done
    fi
    ((${#sources[@]})) || sources=(http://deb.debian.org/debian)
    # minbase = what debian:bookworm-slim holds; no docs, man pages or locales,
    # here or in what the image installs later (the dpkg options stay in it).
    as_root mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      bookworm "$work/base.tar" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1 ||
      skip "mmdebstrap could not build a Debian base (no registry either): $(tail -n 1 "$work/mmdebstrap.log")"
    pm import --change 'CMD ["/bin/bash"]' "$work/base.tar" "$local_base" >"$work/import.log" 2>&1
    rm -f "$work/base.tar"
    base=$local_base
  fi
  flock -u 9
  base_seconds=$((SECONDS - t))
fi
step "base image $base ($base_seconds s)"
pm image exists "$base" || fail "no image $base"
pm run --rm --network none "${ulimits[@]}" --entrypoint true "$base" >"$work/smoke.log" 2>&1 ||
  skip "podman cannot start a container: $(grep -v 'level=' "$work/smoke.log" | tail -n 1)"

if [[ -n $prepare ]]; then
  # The runtime image with a stand-in binary: its apt-get layer (ffmpeg, the
  # slow part) is cached for the real build, which then only copies the binary.
  t=$SECONDS
  mkdir "$work/ctx" && printf '#!/bin/sh\nexit 0\n' >"$work/ctx/mediaflow" && chmod +x "$work/ctx/mediaflow"
  pm build --format docker --network host --build-arg "BASE_IMAGE=$base" --build-arg "FFMPEG=$ffmpeg" \
    -f "$root/Containerfile.runtime" -t "$image" "$work/ctx" >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    fail "podman build (prepare)"
  }
  step "prepared: base image and the image's apt-get layer cached ($((SECONDS - t)) s; $((SECONDS - started)) s in all)"
  exit 0
fi

# --- the build context of Containerfile ----------------------------------------
# .dockerignore must keep target/ (gigabytes), data/ and .env out, and leave in
# what the builder stage compiles.
t=$SECONDS
cat >"$work/Containerfile.context" <<'EOF'
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY . /ctx
RUN cd /ctx && for p in target data .env; do if [ -e $p ]; then echo "in the build context: $p"; exit 1; fi; done \
 && for p in Cargo.toml Cargo.lock src/main.rs config/profiles.yaml benches; do \
      if [ ! -e $p ]; then echo "missing from the build context: $p"; exit 1; fi; done \
 && echo "context: $(du -sk . | cut -f1) KiB"
EOF
pm build --layers=false --network none --build-arg "BASE_IMAGE=$base" --iidfile "$work/context.iid" \
  -f "$work/Containerfile.context" "$root" >"$work/context.log" 2>&1 || {
  tail -n 5 "$work/context.log" >&2
  fail "the build context of Containerfile (.dockerignore)"
}
pm rmi "$(cat "$work/context.iid")" >/dev/null 2>&1 || true
step "build context ok ($(grep -o 'context: [0-9]* KiB' "$work/context.log"), no target/, data/ or .env; $((SECONDS - t)) s)"

# --- the image -----------------------------------------------------------------
build_seconds=0
if [[ -z $existing ]]; then
  mkdir "$work/ctx"
  # Debug info stripped (symbols kept): a third of the size, and quicker to build.
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$binary" "$work/ctx/mediaflow"
  else
    cp "$binary" "$work/ctx/mediaflow"
  fi
  old_id=$(pm image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  t=$SECONDS
  # --format docker: the OCI format has no HEALTHCHECK. The apt-get layer is
  # cached between runs (same base, same instruction); only the binary changes.
  pm build --format docker --network host --build-arg "BASE_IMAGE=$base" --build-arg "FFMPEG=$ffmpeg" \
    -f "$root/Containerfile.runtime" -t "$image" "$work/ctx" >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    fail "podman build"
  }
  build_seconds=$((SECONDS - t))
  new_id=$(pm image inspect --format '{{.Id}}' "$image")
  # The previous build of this tag, now untagged: ours to remove (by id).
  if [[ -n $old_id && $old_id != "$new_id" ]]; then pm rmi "$old_id" >/dev/null 2>&1 || true; fi
  step "built $image in $build_seconds s (binary $(($(stat -c %s "$work/ctx/mediaflow") / 1000000)) MB)"
fi
size=$(pm image inspect --format '{{.Size}}' "$image")
binary_size=$(pm run --rm --network none "${ulimits[@]}" --entrypoint stat "$image" -c %s /usr/local/bin/mediaflow 2>/dev/null) ||
  fail "no /usr/local/bin/mediaflow in $image"
step "image $image: $((size / 1000000)) MB, of which the binary $((binary_size / 1000000)) MB"

# --- what the image declares -----------------------------------------------------
inspect() { pm image inspect --format "$1" "$image"; }
[[ $(inspect '{{.Config.User}}') == 10001:10001 ]] || fail "image user is '$(inspect '{{.Config.User}}')', not 10001:10001"
inspect '{{json .Config.Healthcheck}}' | grep -q '"mediaflow","health"' || fail "no HEALTHCHECK running mediaflow health"
inspect '{{json .Config.ExposedPorts}}' | grep -q '8080/tcp' || fail "port 8080 not exposed"
inspect '{{json .Config.Volumes}}' | grep -q '"/data"' || fail "/data is not a volume"
inspect '{{json .Config.Env}}' | grep -q 'BIND_ADDR=0.0.0.0' || fail "BIND_ADDR=0.0.0.0 not set"
run_sh() { pm run --rm --network none "${ulimits[@]}" --entrypoint /bin/sh "$image" -c "$1" 2>"$work/run.err"; }
# shellcheck disable=SC2016 # expanded by the container's shell
found=$(run_sh 'for t in cc gcc clang rustc cargo curl wget; do command -v $t; done; ls -d /src /root/.cargo 2>/dev/null' || true)
[[ -z $found ]] || fail "the image holds a compiler, curl or source: $found"
if [[ $ffmpeg == true ]]; then
  run_sh 'ffmpeg -hide_banner -version && ffprobe -hide_banner -version' >/dev/null || fail "ffmpeg does not run in the image"
fi
step "metadata ok: user 10001, /data volume, port 8080, HEALTHCHECK, ffmpeg=$ffmpeg, no compiler/curl/source"

# --- protected mode: no API_KEY, no ALLOW_ANONYMOUS ------------------------------
set +e
as_root timeout 60 podman --runtime runc --cgroup-manager cgroupfs run --rm --network none "${ulimits[@]}" "$image" \
  >"$work/refused.out" 2>"$work/refused.err" </dev/null
code=$?
set -e
refusal=$(grep -v 'level=' "$work/refused.err" || true)
[[ $code == 2 ]] || fail "without API_KEY the image should refuse to start (exit 2), got $code: $refusal"
if ! grep -q API_KEY <<<"$refusal" || ! grep -q ALLOW_ANONYMOUS=true <<<"$refusal"; then
  fail "the refusal does not name API_KEY and ALLOW_ANONYMOUS=true: $refusal"
fi
step "refuses to start without API_KEY: $(head -c 100 <<<"$refusal")..."

# --- the service -----------------------------------------------------------------
port=$(scripts/free-ports.py 1)
key=container-check-$RANDOM$RANDOM
mkdir "$work/data"
# A bind mount keeps the host's owner: the image's user must be able to write.
as_root chown 10001:10001 "$work/data"
# Published as a user would (-p); where this machine has no container
# networking, the host's network with PORT instead.
net=(-p "127.0.0.1:$port:8080")
if ! pm run --rm "${net[@]}" "${ulimits[@]}" --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
  step "no container networking here: --network host"
  net=(--network host -e "PORT=$port")
fi
t=$SECONDS
cid=$(pm run -d "${net[@]}" "${ulimits[@]}" -e API_KEY="$key" -v "$work/data:/data" "$image" 2>"$work/run.err") ||
  fail "podman run: $(grep -v 'level=' "$work/run.err")"
base_url=http://127.0.0.1:$port
deadline=$((SECONDS + 60))
until curl -fsS -m 2 "$base_url/health" >/dev/null 2>&1; do
  if ((SECONDS > deadline)) || [[ $(pm inspect --format '{{.State.Running}}' "$cid") != true ]]; then
    pm logs "$cid" >&2 || true
    fail "/health did not answer within 60 s"
  fi
  sleep 0.2
done
[[ $(curl -fsS "$base_url/health") == '{"message":"OK"}' ]] || fail "/health answer: $(curl -sS "$base_url/health")"
step "/health answers after $((SECONDS - t)) s"
pm healthcheck run "$cid" >"$work/hc.log" 2>&1 || fail "podman healthcheck run: $(grep -v 'level=' "$work/hc.log")"
step "podman healthcheck run: healthy"
pid=$(pm inspect --format '{{.State.Pid}}' "$cid")
uid=$(awk '/^Uid:/{print $2}' "/proc/$pid/status")
[[ $uid == 10001 ]] || fail "the service runs as uid $uid, not 10001"
step "the service runs as uid $uid"

# A real image through the API into the volume, and its thumbnail back.
python3 - "$work/in.png" <<'PY'
import struct, sys, zlib
w, h = 800, 600
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, 128)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
status=$(curl -sS -o "$work/post.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
  -H 'Content-Type: image/png' --data-binary "@$work/in.png" "$base_url/thumb/avatar/container-check")
[[ $status == 201 ]] || fail "POST /thumb answered $status: $(cat "$work/post.json")"
for stored in $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["object_key"], *d["thumbnails"].values())' "$work/post.json"); do
  [[ -f $work/data/$stored ]] || fail "$stored is not in the mounted volume"
  [[ $(stat -c %u "$work/data/$stored") == 10001 ]] || fail "$stored is not owned by uid 10001"
done
cmp -s "$work/in.png" "$work/data/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["object_key"])' "$work/post.json")" ||
  fail "the stored original differs from the upload"
curl -fsS -o "$work/thumb.webp" "$base_url/thumb/avatar/container-check?width=128" || fail "GET /thumb"
# Decoded by the image's own pipeline (`mediaflow thumb`); never upscaled, so a
# huge width gives the size as stored.
chmod 644 "$work/thumb.webp"
decoded=$(pm run --rm --network none "${ulimits[@]}" -v "$work/thumb.webp:/in.webp:ro" "$image" \
  thumb /in.webp -w 100000 -f png -o /tmp/out.png 2>/dev/null) || fail "the thumbnail does not decode"
grep -q ' 128x96 ' <<<"$decoded" || fail "thumbnail is not 128x96: $decoded"
step "POST /thumb stored $(find "$work/data" -type f | wc -l) files in the volume (uid 10001); GET /thumb decodes to 128x96"

# SIGTERM (podman stop) drains and exits 0: PID 1 handles its signals.
pm stop -t 20 "$cid" >/dev/null 2>&1
exit_code=$(pm inspect --format '{{.State.ExitCode}}' "$cid")
[[ $exit_code == 0 ]] || fail "exit code $exit_code after SIGTERM"
step "stops on SIGTERM with exit 0"

echo "container test passed in $((SECONDS - started)) s: base $base_seconds s, build $build_seconds s, image $image $((size / 1000000)) MB"
