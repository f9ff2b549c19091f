#!/usr/bin/env bash
# Builds the local base image for a Docker engine that cannot pull (no registry): Debian
# bookworm (minbase) with Python 3, Flask, requests and Prometheus, from Debian's packages
# by debootstrap, imported with `docker import`. An engine that can pull does not need
# this: the Dockerfile and compose defaults are public images.
# Usage: deploy/docker/build-base-image.sh [image-tag]    (default sovereign-local/bookworm:1)
# Skips the build when the tag exists. Needs root (debootstrap).
set -euo pipefail
cd "$(dirname "$0")/../.."

tag="${1:-sovereign-local/bookworm:1}"
step() { printf '==> %s\n' "$*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
  step "$tag exists; not rebuilding (docker rmi $tag to force)"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  step "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi
# The mirror apt already uses on this machine (DEBIAN_MIRROR overrides).
mirror="${DEBIAN_MIRROR:-$( (grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | awk '{print $2}'; grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}') \
  | grep -E '/debian/?$' | head -n1 || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="target/docker/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs"
step "debootstrap bookworm (minbase + python3-flask, python3-requests, prometheus) from $mirror: about a minute"
start=$(date +%s)
debootstrap --variant=minbase \
  --include=python3-flask,python3-requests,prometheus,ca-certificates \
  bookworm "$rootfs" "$mirror" >target/docker/debootstrap.log 2>&1 \
  || { tail -n 30 target/docker/debootstrap.log >&2; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
step "docker import as $tag ($(du -sh "$rootfs" | cut -f1), debootstrap took $(( $(date +%s) - start )) s)"
tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
rm -rf "$rootfs"
step "built $tag"
