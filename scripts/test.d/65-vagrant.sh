#!/usr/bin/env bash
# The project's Vagrantfile really runs: vagrant-libvirt brings up cp-01 and wk-01 offline
# (stand-in RKE2), the vm-tests guest checks, vagrant destroy (docs/vm-tests.md, "Vagrant").
set -euo pipefail
cd "$(dirname "$0")/../.."
exec vm-tests/run vagrant
