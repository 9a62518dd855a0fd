#!/usr/bin/env bash
# Python-side checks (pytest.ini lists the directories). Binaries come from target/debug.
set -euo pipefail
cd "$(dirname "$0")/../.."
dirs=()
for d in $(sed -n 's/^testpaths *= *//p' pytest.ini); do [ -d "$d" ] && dirs+=("$d"); done
[ ${#dirs[@]} -gt 0 ] || { echo "no python test directories yet"; exit 0; }
# Offline: a network namespace with only loopback (scripts/offline.sh).
scripts/offline.sh .venv/bin/pytest "${dirs[@]}"
