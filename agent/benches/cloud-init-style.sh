#!/usr/bin/env bash
# The old cloud-init way, for the bootstrap benchmark only: the same job as
# `canarie-agent bootstrap` on a worker, as the runcmd snippets did it (curl, jq, blkid,
# mkfs, heredocs, then a start over D-Bus where `systemctl start` used to be).
# Inputs (environment): IMDS, VAULT, CA, DEV, ROOT, DBUS, KV_SECRET, SERVER_URL.
set -euo pipefail

token=$(curl -sf --noproxy '*' -H Metadata:true \
  "$IMDS/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net" |
  jq -r .access_token)
join=$(curl -sf --cacert "$CA" -H "Authorization: Bearer $token" \
  "$VAULT/secrets/$KV_SECRET?api-version=2025-07-01" | jq -r .value)

# The old gate: format when blkid prints nothing (the trap disk-safety.md describes).
if [ -z "$(blkid -p -o value -s TYPE "$DEV" 2>/dev/null || true)" ]; then
  mkfs.ext4 -q -F -L longhorn "$DEV"
fi
mkdir -p "$ROOT/var/lib/longhorn" "$ROOT/etc/rancher/rke2"
mount "$DEV" "$ROOT/var/lib/longhorn"
uuid=$(blkid -s UUID -o value "$DEV")
echo "UUID=$uuid /var/lib/longhorn ext4 defaults,nofail 0 2" >>"$ROOT/etc/fstab"

umask 077
cat >"$ROOT/etc/rancher/rke2/config.yaml" <<YAML
server: $SERVER_URL
token: $join
node-name: wk-01
node-label:
  - node.longhorn.io/create-default-disk=true
YAML

busctl --address="$DBUS" call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
  org.freedesktop.systemd1.Manager StartUnit ss rke2-agent.service replace >/dev/null
