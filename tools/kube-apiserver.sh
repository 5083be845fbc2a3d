#!/usr/bin/env bash
# Builds a real kube-apiserver (Kubernetes 1.20.2, Debian bookworm's `kubernetes` source package)
# once into a cache, and prints the folder that holds `kube-apiserver` and `etcd`.
# No binary package on Debian, PyPI or npm ships kube-apiserver; bookworm's source package is the
# only one that holds its source (trixie and sid ship only kubectl). Recipe and measurements:
# ../shared/DESIGN.md "Kubernetes here". ~4.5 CPU-minutes, 1.3 GB peak memory, 278 MB download.
#   usage: kube-apiserver.sh [DIR]     (default: $HOME/.cache/modelserve-kube)
# Go 1.19 and etcd 3.4 come from Debian (apt-get install, as root); the source package and the
# reflect2 library are fetched into DIR with a private apt state: the host's sources stay as
# they are.
set -euo pipefail
D=${1:-$HOME/.cache/modelserve-kube}
B=$D/bin
if [ -x "$B/kube-apiserver" ] && [ -x "$B/etcd" ] && "$B/kube-apiserver" --version >/dev/null 2>&1; then
  echo "$B"; exit 0
fi
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo); else
    echo "kube-apiserver.sh: ${need[*]} missing and apt-get needs root or sudo" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$D" && cd "$D"
URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$URI" ] || URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
mkdir -p apt/lists/partial apt/cache/archives/partial apt/src apt/prefs debs src
printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$URI" > apt/src/bookworm.sources
APTO=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$D/apt/src" -o Dir::Etc::Preferences=/dev/null
      -o Dir::Etc::PreferencesParts="$D/apt/prefs" -o Dir::State::Lists="$D/apt/lists" -o Dir::Cache="$D/apt/cache"
      -o Dir::State::status=/dev/null)
apt-get "${APTO[@]}" -qq update >&2
(cd debs && apt-get "${APTO[@]}" -qq download golang-github-modern-go-reflect2-dev >&2)
rm -rf src/* reflect2 && dpkg-deb -x debs/golang-github-modern-go-reflect2-dev_*.deb reflect2
(cd src && apt-get "${APTO[@]}" -qq source kubernetes >&2)
K=$(find src -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)
# The vendored reflect2 1.0.1 segfaults in mapiterinit on the first custom-resource write under
# Go 1.19; Debian's 1.0.2 does not.
R=$K/vendor/github.com/modern-go/reflect2
rm -rf "$R" && mkdir -p "$R"
find reflect2/usr/share/gocode/src/github.com/modern-go/reflect2 -maxdepth 1 -type f \
  ! -name 'go.mod' ! -name 'go.sum' ! -name '*_test.go' -exec cp {} "$R/" \;
(cd "$K" && make WHAT=cmd/kube-apiserver >&2)
mkdir -p "$B"
cp "$(find "$K/_output" -type f -name kube-apiserver -perm -u+x | head -1)" "$B/kube-apiserver"
cp "$(command -v etcd)" "$B/etcd"
rm -rf src reflect2   # the source tree and _output are 1.8 GB
"$B/kube-apiserver" --version >&2
echo "$B"
