"""The cloud-init baseline: the bootstrap as it was before canarie-agent, for the timing
comparison. A NoCloud #cloud-config whose runcmd does the old steps: curl IMDS for a
managed-identity token, curl Key Vault for the join token, a blkid-gated mkfs.ext4 of the
data disk, heredocs for every RKE2 file, `systemctl enable --now`. The heredocs carry the
same bytes `canarie-agent render` gives, so both sides end in the same files (the same
checks prove it), and only the machinery differs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .vm import DATA_LINK, IMDS_ADDR

TOKEN_DROPIN = "/etc/rancher/rke2/config.yaml.d/10-token.yaml"
EOF_MARK = "CANARIE_EOF"

SCRIPT_HEAD = """\
set -eu
umask 077
IMDS=http://{imds}/metadata
TOKEN=$(curl -sf --retry 20 --retry-delay 2 --retry-connrefused -H Metadata:true \\
  "$IMDS/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net" | jq -r .access_token)
JOIN=$(curl -sf --retry 20 --retry-delay 2 --cacert /run/canarie-vmtest/sim-ca.pem \\
  -H "Authorization: Bearer $TOKEN" \\
  "https://{vault}.vault.azure.net/secrets/{secret}?api-version=7.4" | jq -r .value)
"""

SCRIPT_DISK = """\
DISK={link}
for i in $(seq 120); do [ -e "$DISK" ] && break; sleep 1; done
if ! blkid "$DISK" >/dev/null; then mkfs.ext4 -F -L longhorn "$DISK"; fi
mkdir -p /var/lib/longhorn
UUID=$(blkid -s UUID -o value "$DISK")
echo "UUID=$UUID /var/lib/longhorn ext4 defaults,nofail 0 2" >>/etc/fstab
mount /var/lib/longhorn
"""


def cloud_config(node_config: dict, rendered: Path) -> str:
    """The #cloud-config for one node; `rendered` is `canarie-agent render --out` output."""
    jt = node_config["join_token"]
    script = SCRIPT_HEAD.format(imds=IMDS_ADDR, vault=jt["vault"], secret=jt["secret"])
    if "data_disk" in node_config:
        script += SCRIPT_DISK.format(link=DATA_LINK)
    for path in sorted(p for p in rendered.rglob("*") if p.is_file()):
        target = "/" + str(path.relative_to(rendered))
        if target == TOKEN_DROPIN:
            continue
        text = path.read_text()
        assert EOF_MARK not in text and text.endswith("\n"), target
        mode = f"{path.stat().st_mode & 0o777:o}"
        script += f"mkdir -p {Path(target).parent}\ncat >{target} <<'{EOF_MARK}'\n{text}{EOF_MARK}\nchmod {mode} {target}\n"
    script += f'mkdir -p {Path(TOKEN_DROPIN).parent}\nprintf \'token: "%s"\\n\' "$JOIN" >{TOKEN_DROPIN}\n'
    script += f"systemctl daemon-reload\nsystemctl enable --now rke2-{node_config['role']}.service\n"
    return ("#cloud-config\n# vm-tests baseline: the pre-canarie bootstrap (see harness/baseline.py)\n"
            "runcmd:\n  - |\n" + textwrap.indent(script, "    ", lambda line: True))


def meta_data(instance_id: str, hostname: str) -> str:
    return f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"


def platform_cloud_config(admin: str, public_key: str) -> str:
    """cloud-init's part of today's split image (docs/image.md): Azure's platform provisioning
    as its Azure data source does it (the admin user with a locked password and sudo, its key,
    no password login; the hostname comes from meta-data, host keys and growpart from the
    default modules), here from a NoCloud seed. The agent does the rest, as on the image."""
    user = {"name": admin, "lock_passwd": True, "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL", "ssh_authorized_keys": [public_key]}
    # JSON is YAML: no quoting rules to get wrong for the key.
    return ("#cloud-config\n# vm-tests: the platform provisioning of the split image (harness/baseline.py)\n"
            f"users: [{json.dumps(user)}]\nssh_pwauth: false\n")
