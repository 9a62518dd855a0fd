#!/usr/bin/env bash
# Image bake (docs/image.md): bad input, a bake of a Debian 12 cloud-style image with a
# stand-in RKE2 artifact set, the checks and `verify` on broken copies, then the baked VHD
# booting in the vm-tests QEMU harness (cp-01 and wk-01). About 3-4 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
vm-tests/install-deps.sh # QEMU: qemu-img (the VHD) and qemu-system (the boot)
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked -q -p azure-sim --bin azure-sim
deb=$(packaging/build.sh | tail -n 1)
export PYTHONPATH=vm-tests PYTHONDONTWRITEBYTECODE=1
# The only steps that may download (cached in /var/cache/canarie-vm-tests/): the vm-tests
# root filesystem and open-iscsi's packages for it.
python3 -m harness rootfs
python3 packaging/image/tests/bake_test.py prepare
# The rest runs in a network namespace with only loopback (scripts/offline.sh).
exec scripts/offline.sh python3 packaging/image/tests/bake_test.py test --deb "$deb"
