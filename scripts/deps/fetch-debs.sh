#!/usr/bin/env bash
# Downloads and unpacks the packages of scripts/deps/debs.txt without installing them
# (why: that file). Re-run safe: a package whose unpacked tree exists is left alone.
# The tests find a tree with: "${CANARIE_DEB_CACHE:-/var/cache/canarie-debs}/<package>/root".
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${CANARIE_DEB_CACHE:-/var/cache/canarie-debs}
mkdir -p "$cache"
for pkg in $(grep -v '^\s*#' scripts/deps/debs.txt | grep -v '^\s*$'); do
  dir=$cache/$pkg
  [ -f "$dir/root/.canarie-version" ] && continue
  rm -rf "$dir" && mkdir -p "$dir/download"
  # apt drops privileges to _apt for the download; let it write there.
  chown _apt "$dir/download" 2>/dev/null || true
  (cd "$dir/download" && apt-get download -q "$pkg" >/dev/null) || {
    echo "fetch-debs: apt-get download $pkg failed (run apt-get update, check the mirror)" >&2
    exit 1
  }
  deb=$(ls "$dir"/download/*.deb)
  dpkg-deb -x "$deb" "$dir/root.tmp"
  dpkg-deb -f "$deb" Version >"$dir/root.tmp/.canarie-version"
  mv "$dir/root.tmp" "$dir/root"
  echo "fetch-debs: $pkg $(cat "$dir/root/.canarie-version") -> $dir/root"
done
