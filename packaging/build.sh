#!/usr/bin/env bash
# One command: the static canarie-agent binary and its Debian package. Prints the .deb's
# path on stdout; the binary is target/x86_64-unknown-linux-gnu/release/canarie-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(packaging/static-build.sh)
packaging/deb/build-deb.sh "$bin"
