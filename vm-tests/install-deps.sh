#!/usr/bin/env bash
# What the VM tests need beyond scripts/deps/apt.txt: QEMU from bookworm-backports. Debian
# 12 machines here carry qemu-utils 10.0 from backports, which conflicts with bookworm's
# own qemu-system 7.2, so both come from backports (the same Debian archive, one more suite).
set -euo pipefail
. /etc/os-release
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if have qemu-system-x86 && have qemu-utils && command -v qemu-system-x86_64 >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
target=()
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  list=/etc/apt/sources.list.d/canarie-bookworm-backports.sources
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "vm-tests: adding the bookworm-backports suite ($list)"
    cat >"$list" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  fi
  target=(-t bookworm-backports)
fi
echo "vm-tests: apt-get install ${target[*]} qemu-system-x86 qemu-utils"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${target[@]}" qemu-system-x86 qemu-utils >/dev/null
