#!/usr/bin/env bash
# Makes sure this machine can build and run the images without a Docker daemon: Debian's
# buildah (build), podman (run), runc (crun fails on this kernel's hybrid cgroups), slirp4netns
# (rootless-style networking that works here) and debootstrap (the stand-in base image,
# tools/base-image.sh). Nothing is installed when a Docker daemon answers or the tools are
# already there. Needs root (apt-get); ~40 s on a fresh Debian 12 machine, ~60 MB.
#   usage: container-tools.sh        (prints the builder it leaves: `docker` or `buildah`)
set -euo pipefail
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo docker; exit 0
fi
NEED=()
for tool in buildah podman runc slirp4netns debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || NEED+=("$tool")
done
if [ ${#NEED[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "no Docker daemon, and ${NEED[*]} missing: install them (apt-get install ${NEED[*]}) as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${NEED[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${NEED[@]}" >&2; }
fi
echo buildah
