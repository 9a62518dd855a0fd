#!/usr/bin/env bash
# Vagrant provisioning of one canarie node (see the top-level Vagrantfile and
# docs/vm-tests.md). Ubuntu 24.04, as root. Inputs in /tmp/canarie: the .deb, azure-sim and
# this VM's azure-sim scenario (its node config as userData and the join token); env ROLE
# (server|agent), NODE_IP, RKE2_VERSION, and RKE2_ARTIFACTS: empty (RKE2 from get.rke2.io)
# or a directory with RKE2's air-gap files and install.sh (offline; vm-tests/run vagrant).
set -euo pipefail
in=/tmp/canarie
export DEBIAN_FRONTEND=noninteractive

# Only what the box lacks: an offline box (vm-tests/run vagrant) has them all.
missing=()
for pkg in socat curl open-iscsi; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
systemctl enable --now iscsid.service # Longhorn needs it on every node

# --- simulated Azure: azure-sim on loopback, reached at the real addresses -------------------
install -m 0755 "$in/azure-sim" /usr/local/bin/azure-sim
install -d -m 0700 /etc/azure-sim
install -m 0600 "$in/scenario.json" /etc/azure-sim/scenario.json
vault=$(python3 -c 'import json; print(json.load(open("/etc/azure-sim/scenario.json"))["user_data_json"]["join_token"]["vault"])')
cat >/etc/systemd/system/azure-sim.service <<'UNIT'
# Simulated IMDS, Key Vault and WireServer for this VM (vm-tests/azure-sim). It listens on
# 127.0.0.1 only; the socat units below answer at 169.254.169.254:80, the vault's address
# and 168.63.129.16:80 (where the agent reports Ready).
[Unit]
Description=azure-sim: simulated Azure IMDS, Key Vault and WireServer
Before=canarie-agent.service

[Service]
ExecStartPre=-/usr/sbin/ip addr add 169.254.169.254/32 dev lo
ExecStartPre=-/usr/sbin/ip addr add 169.254.169.253/32 dev lo
ExecStartPre=-/usr/sbin/ip addr add 168.63.129.16/32 dev lo
ExecStartPre=/usr/bin/rm -f /run/azure-sim-ready.json
ExecStart=/usr/local/bin/azure-sim --scenario /etc/azure-sim/scenario.json \
  --imds-listen 127.0.0.1:18080 --vault-listen 127.0.0.1:18443 --wireserver-listen 127.0.0.1:18081 \
  --ca-out /etc/azure-sim/ca.pem --ready-file /run/azure-sim-ready.json
# The agent may start only once the listeners are up and the CA is written.
ExecStartPost=/bin/sh -c 'while [ ! -s /run/azure-sim-ready.json ]; do sleep 0.1; done'

[Install]
WantedBy=multi-user.target
UNIT
while read -r svc addr port; do
  set -- "$svc" "$addr" "$port"
  cat >"/etc/systemd/system/azure-sim-$1.service" <<UNIT
[Unit]
Description=azure-sim: $1 at $2
Requires=azure-sim.service
After=azure-sim.service
Before=canarie-agent.service

[Service]
ExecStart=/usr/bin/socat TCP-LISTEN:${2##*:},bind=${2%:*},fork,reuseaddr TCP:127.0.0.1:$3

[Install]
WantedBy=multi-user.target
UNIT
done <<'FORWARDS'
imds 169.254.169.254:80 18080
vault 169.254.169.253:443 18443
wireserver 168.63.129.16:80 18081
FORWARDS
sed -i '/# azure-sim$/d' /etc/hosts
echo "169.254.169.253 $vault.vault.azure.net # azure-sim" >>/etc/hosts
systemctl daemon-reload
systemctl enable --now azure-sim.service azure-sim-imds.service azure-sim-vault.service azure-sim-wireserver.service

# --- the data disk's Azure LUN link (what the platform's udev rules give on Azure) --------
if [ "$ROLE" = agent ]; then
  root_disk=$(lsblk -ndo PKNAME "$(findmnt -no SOURCE /)")
  data=$(lsblk -dnbo NAME,SIZE,TYPE | awk -v r="$root_disk" '$3 == "disk" && $2 == 10737418240 && $1 != r {print $1; exit}')
  [ -n "$data" ] || { echo "provision: no 10 GiB data disk found" >&2; lsblk >&2; exit 1; }
  path=$(udevadm info -q property -n "/dev/$data" | sed -n 's/^ID_PATH=//p')
  echo "ENV{DEVTYPE}==\"disk\", ENV{ID_PATH}==\"$path\", SYMLINK+=\"disk/azure/scsi1/lun0\"" \
    >/etc/udev/rules.d/66-canarie-vagrant-lun0.rules
  udevadm control --reload
  udevadm trigger --settle "/dev/$data"
fi

# --- RKE2: installed, not enabled (canarie-agent starts it) -------------------------------
if [ -n "${RKE2_ARTIFACTS:-}" ]; then
  # Air-gap install: the same script, fed from the uploaded directory (wherever the upload
  # nested it), which checks the tarball against the release's sha256sum file.
  installer=$(find "$RKE2_ARTIFACTS" -name install.sh -print -quit)
  [ -n "$installer" ] || { echo "provision: no install.sh under $RKE2_ARTIFACTS" >&2; exit 1; }
  INSTALL_RKE2_ARTIFACT_PATH=$(dirname "$installer") INSTALL_RKE2_TYPE="$ROLE" sh "$installer"
elif [ ! -x /usr/local/bin/rke2 ]; then
  curl -sfL https://get.rke2.io | INSTALL_RKE2_VERSION="$RKE2_VERSION" INSTALL_RKE2_TYPE="$ROLE" sh -
fi
systemctl disable "rke2-$ROLE.service" 2>/dev/null || true
# Vagrant's first NIC is NAT; RKE2 must use the private network. A drop-in beside the
# agent's own files (RKE2 merges config.yaml.d/*.yaml).
install -d -m 0700 /etc/rancher/rke2/config.yaml.d
printf 'node-ip: "%s"\n' "$NODE_IP" >/etc/rancher/rke2/config.yaml.d/50-vagrant.yaml
chmod 0600 /etc/rancher/rke2/config.yaml.d/50-vagrant.yaml

# --- canarie-agent ----------------------------------------------------------------------
apt-get install -y -qq "$in/canarie-agent.deb" >/dev/null
install -d /etc/systemd/system/canarie-agent.service.d
cat >/etc/systemd/system/canarie-agent.service.d/50-azure-sim.conf <<'UNIT'
[Service]
Environment=CANARIE_CA_FILE=/etc/azure-sim/ca.pem
UNIT
systemctl daemon-reload
rm -rf "$in"
echo "provision: starting canarie-agent (a server's first RKE2 start takes minutes)"
systemctl start canarie-agent.service
journalctl -b -u canarie-agent.service --no-pager | tail -n 15
