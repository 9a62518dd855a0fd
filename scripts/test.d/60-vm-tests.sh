#!/usr/bin/env bash
# End-to-end: every vm-tests scenario in QEMU guests (about 15 minutes; docs/vm-tests.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec vm-tests/run test
