"""The Secret manifests canarie-agent seeds from Key Vault, against the Kubernetes
schemas and read by a YAML 1.1 parser (PyYAML), as RKE2's deploy controller reads them.

The real binaries: azure-sim (simulated IMDS and Key Vault on 127.0.0.1, with TLS) holds the
secrets, and `canarie-agent bootstrap --root SANDBOX` runs a server config against it. The
sandbox has no systemd, so the run stops at step start-rke2 (exit code 7), after step
cluster-secrets has written the files. The Rust suite (agent/tests/cluster_secrets.rs)
covers modes, rewrites and failures; this checks what the API server would accept.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bundlelib import KUBERNETES_VERSION

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "target" / "debug" / "canarie-agent"
SIM = REPO / "target" / "debug" / "azure-sim"
MANIFESTS_DIR = "var/lib/rancher/rke2/server/manifests"

SECRETS = {
    "rke2-join-token": "K10-k8s-validate-join-token",
    "git-token": "ghp_k8sValidateToken",
    "grafana-admin-password": "k8s-validate-grafana",
    "longhorn-ui-password": "k8s-validate-longhorn",
    "external-dns-client-secret": "k8s~validate.dns",
}

# The shared fixture (agent unit tests use it too); a short RBAC wait for a test that fails.
CONFIG = json.loads((REPO / "examples" / "server-with-secrets.json").read_text())
CONFIG["join_token"]["rbac_wait_seconds"] = 5

# file -> (Secret name, namespace, keys, seeds its Namespace)
EXPECTED = {
    "canarie-secret-git-auth.yaml": ("canarie-kube-auth", "fleet-local", {"username", "password"}, False),
    "canarie-secret-grafana-admin.yaml": ("grafana-admin", "monitoring", {"admin-user", "admin-password"}, True),
    "canarie-secret-longhorn-ui-auth.yaml": ("longhorn-ui-auth", "longhorn-system", {"auth"}, False),
    "canarie-secret-external-dns-azure.yaml": ("external-dns-azure", "external-dns", {"azure.json"}, True),
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    for binary in (AGENT, SIM):
        if not binary.is_file():
            pytest.fail(f"{binary} is missing: run `cargo build --workspace --bins` first")
    work = tmp_path_factory.mktemp("seed")
    (work / "scenario.json").write_text(json.dumps({"secrets": {k: {"value": v} for k, v in SECRETS.items()}}))
    ready = work / "ready.json"
    sim = subprocess.Popen(
        [str(SIM), "--scenario", str(work / "scenario.json"), "--ca-out", str(work / "ca.pem"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert sim.poll() is None, f"azure-sim exited with {sim.returncode}"
            assert time.monotonic() < deadline, "azure-sim did not start within 30 s"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        root = work / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc/machine-id").write_text("0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")
        (work / "config.json").write_text(json.dumps(CONFIG))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIE_") and "proxy" not in k.lower()}
        run = subprocess.run(
            [
                str(AGENT), "bootstrap",
                "--root", str(root),
                "--config", str(work / "config.json"),
                "--imds-url", info["imds_url"],
                "--vault-url", info["vault_url"],
                "--ca-file", info["ca_file"],
                "--imds-deadline", "10", "--vault-deadline", "10", "--rke2-start-timeout", "5",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    return root / MANIFESTS_DIR, run


def test_the_run_stops_only_at_starting_rke2(seeded):
    _, run = seeded
    assert run.returncode == 7, run.stdout + run.stderr
    assert "failed in step start-rke2" in run.stderr
    for value in SECRETS.values():
        assert value not in run.stdout and value not in run.stderr


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_each_secret_manifest_is_a_valid_kubernetes_secret(seeded, file):
    manifests, _ = seeded
    path = manifests / file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    name, namespace, keys, seeds_namespace = EXPECTED[file]
    *namespaces, secret = docs
    assert [(d["kind"], d["metadata"]["name"]) for d in namespaces] == ([("Namespace", namespace)] if seeds_namespace else [])
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("Secret", name, namespace)
    assert set(secret["data"]) == keys
    for value in secret["data"].values():
        assert isinstance(value, str)
        base64.b64decode(value, validate=True)


def test_consumers_get_what_they_read(seeded):
    manifests, _ = seeded

    def data(file):
        secret = [d for d in yaml.safe_load_all((manifests / file).read_text()) if d][-1]
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    assert data("canarie-secret-git-auth.yaml") == {"username": "x-access-token", "password": SECRETS["git-token"]}
    assert data("canarie-secret-grafana-admin.yaml") == {"admin-user": "admin", "admin-password": SECRETS["grafana-admin-password"]}
    user, hashed = data("canarie-secret-longhorn-ui-auth.yaml")["auth"].rstrip("\n").split(":", 1)
    assert user == "admin" and hashed.startswith("$2y$10$") and len(hashed) == 60
    azure = json.loads(data("canarie-secret-external-dns-azure.yaml")["azure.json"])
    assert azure == {
        "tenantId": "11111111-2222-3333-4444-555555555555",
        "subscriptionId": "66666666-7777-8888-9999-000000000000",
        "resourceGroup": "canarie-rg",
        "aadClientId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "aadClientSecret": SECRETS["external-dns-client-secret"],
    }
