#!/usr/bin/env bash
# Installs Prometheus's `promtool` (Debian bookworm's `prometheus` package, 2.42) into a cache
# and prints its path; no Prometheus server runs and nothing of the system changes. The .deb is
# fetched with a private apt state (its own sources and package lists, as perf-analyzer.sh does),
# so neither root nor an `apt-get update`d host index is needed, and only the one binary is
# unpacked out of it (a Go binary that links only libc: it runs as it is). ~6 s on a fresh
# machine here (bookworm's package index and the 19 MB .deb); 46 MB left in the cache.
#   usage: promtool.sh [DIR]     (default: $HOME/.cache/modelserve-promtool)
#   then:  "$(promtool.sh)" check rules deploy/prometheus/modelserve-slo-rules.yaml
set -euo pipefail
D=${1:-$HOME/.cache/modelserve-promtool}
P=$D/bin/promtool
if [ -x "$P" ] && "$P" --version >/dev/null 2>&1; then echo "$P"; exit 0; fi
mkdir -p "$D" && cd "$D"
URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$URI" ] || URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
mkdir -p apt/lists/partial apt/cache/archives/partial apt/src apt/prefs debs
printf 'Types: deb\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$URI" > apt/src/bookworm.sources
APTO=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$D/apt/src" -o Dir::Etc::Preferences=/dev/null
      -o Dir::Etc::PreferencesParts="$D/apt/prefs" -o Dir::State::Lists="$D/apt/lists" -o Dir::Cache="$D/apt/cache"
      -o Dir::State::status=/dev/null)
apt-get "${APTO[@]}" -qq update >&2
rm -f debs/prometheus_*.deb
(cd debs && apt-get "${APTO[@]}" -qq download prometheus >&2)
rm -rf root && dpkg-deb -x debs/prometheus_*.deb root
mkdir -p "$D/bin" && cp root/usr/bin/promtool "$P"
rm -rf root debs apt   # the server binary, web assets and package lists
"$P" --version >&2 || { echo "promtool does not run (see above)" >&2; exit 1; }
echo "$P"
