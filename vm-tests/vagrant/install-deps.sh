#!/usr/bin/env bash
# What `vm-tests/run vagrant` needs beyond vm-tests/install-deps.sh (QEMU): Vagrant 2.3.4,
# vagrant-libvirt 0.11.2 and libvirt 9.0 from Debian 12. The libvirtd the test uses runs
# only inside its own network and mount namespaces (harness/vagrant.py); the system one is
# never started by this script, and the `default` NAT network Debian defines is kept from
# autostarting, so no bridge (virbr0) can appear on this machine because of it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkgs=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu)
missing=()
for p in "${pkgs[@]}"; do have "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "vm-tests: apt-get install ${missing[*]}"
  apt-get update -qq
  # Without recommends: no dnsmasq, no NFS server, no libguestfs.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
if ip -o link show | grep -q ': virbr'; then
  echo "vm-tests: a libvirt bridge (virbr*) exists on this machine; the vagrant test refuses to run beside it" >&2
  ip -o link show | grep ': virbr' >&2
  exit 1
fi
