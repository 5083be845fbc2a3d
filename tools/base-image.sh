#!/usr/bin/env bash
# The Dockerfile's base, python:3.11-slim-bookworm, where no registry answers: an equivalent
# built from Debian with debootstrap (minbase, python3.11, venv, ca-certificates) and imported
# under that very name, only when the name is missing from the local store; where a registry
# answers, the real image is pulled instead (one try, 60 s). Nothing of this goes into the
# Dockerfile: the stand-in alone carries this machine's extra CA certificates
# (/usr/local/share/ca-certificates, how the package index is reached here) with PIP_CERT and
# SSL_CERT_FILE pointing at the bundle. ~3 min on a fresh machine (the host's Debian mirror),
# ~140 MB in the store.
#   usage: base-image.sh [docker|buildah]     (the builder, default: what container-tools.sh says)
set -euo pipefail
NAME=docker.io/library/python:3.11-slim-bookworm
BUILDER=${1:-$(dirname "$0")/container-tools.sh}
[ "$BUILDER" = docker ] || [ "$BUILDER" = buildah ] || BUILDER=$("$BUILDER")
DRIVER=${STORAGE_DRIVER:-overlay}
if [ "$BUILDER" = docker ]; then
  exists() { docker image inspect "$NAME" >/dev/null 2>&1; }
  pull() { timeout 60 docker pull -q "$NAME" >&2; }
  import() { docker import "${CHANGES[@]}" - "$NAME" >&2; }
else
  exists() { podman --storage-driver "$DRIVER" image exists "$NAME"; }
  pull() { timeout 60 podman --storage-driver "$DRIVER" pull -q "$NAME" >&2; }
  import() { podman --storage-driver "$DRIVER" import "${CHANGES[@]}" - "$NAME" >&2; }
fi
if exists; then echo "$NAME"; exit 0; fi
if pull 2>/dev/null; then echo "$NAME"; exit 0; fi
echo "base-image: $NAME cannot be pulled; building a stand-in from Debian bookworm" >&2

URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$URI" ] || URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$URI" ] || URI=http://deb.debian.org/debian
ROOT=$(mktemp -d /var/tmp/modelserve-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$ROOT" "$URI" >&2
# This machine's CAs (the package index is reached through them), in the stand-in only.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi
chroot "$ROOT" update-ca-certificates >&2
# As the slim image does: no package lists, caches, docs, man pages or translations.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/usr/share/doc/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* \
  "$ROOT"/var/log/*
BUNDLE=/etc/ssl/certs/ca-certificates.crt
CHANGES=(--change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
         --change "ENV LANG=C.UTF-8" --change "ENV PIP_CERT=$BUNDLE" --change "ENV SSL_CERT_FILE=$BUNDLE"
         --change 'CMD ["python3"]')
tar -C "$ROOT" -c . | import
echo "$NAME"
