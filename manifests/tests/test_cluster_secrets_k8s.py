"""The Secret manifests canarie-agent seeds from Key Vault, against the Kubernetes
schemas and read by a YAML 1.1 parser (PyYAML), as RKE2's deploy controller reads them.

The real binaries: azure-sim (simulated IMDS and Key Vault on 127.0.0.1, with TLS) holds the
secrets, and `canarie-agent bootstrap --root SANDBOX` runs a server config against it. The
sandbox has no systemd, so the run stops at step start-rke2 (exit code 7), after step
cluster-secrets has written the files. The Rust suite (agent/tests/cluster_secrets.rs)
covers modes, rewrites and failures; this checks what the API server would accept, and that
each Secret is exactly the one its consumer reads: names, namespaces and keys come from the
agent's output and from the consumers' own files (values files, the agent's Ingress and
GitRepo), never from a copy in this test.
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

from bundlelib import BUNDLES_DIR, KUBERNETES_VERSION, fleet_file, load_yaml
from clusterfacts import namespaces

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


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def seeded_secrets(manifests: Path) -> dict[str, tuple[list[dict], dict]]:
    """file -> (the Namespace objects before it, the Secret) of every canarie-secret-*.yaml."""
    out = {}
    for path in sorted(manifests.glob("canarie-secret-*.yaml")):
        *before, secret = docs_of(path)
        out[path.name] = (before, secret)
    return out


def test_one_valid_secret_manifest_per_declared_cluster_secret(seeded):
    manifests, _ = seeded
    found = seeded_secrets(manifests)
    assert len(found) == len(CONFIG["cluster_secrets"]), sorted(found)
    for file, (before, secret) in found.items():
        path = manifests / file
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for doc in [*before, secret]:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert secret["kind"] == "Secret", file
        for value in secret["data"].values():
            assert isinstance(value, str)
            base64.b64decode(value, validate=True)


def test_a_namespace_no_seeded_chart_creates_is_seeded_with_its_secret(seeded):
    """monitoring and external-dns are created by Fleet bundles, which come later: the agent
    writes the Namespace with the Secret. A namespace a seeded manifest uses exists before."""
    manifests, _ = seeded
    table = namespaces()
    for file, (before, secret) in seeded_secrets(manifests).items():
        ns = secret["metadata"]["namespace"]
        assert ns in table, f"{file}: namespace {ns} is not in manifests/facts/namespaces.yaml"
        bundles_only = all(h.startswith("bundle:") for h in table[ns]["holds"])
        expected = [("Namespace", ns)] if bundles_only else []
        assert [(d["kind"], d["metadata"]["name"]) for d in before] == expected, file


# Traefik's basicAuth Middleware reads the htpasswd lines of the only key of a Secret that is
# not of type kubernetes.io/basic-auth, whatever its name, and refuses a Secret with any other
# number of keys (traefik pkg/provider/kubernetes/crd, loadAuthCredentials: "must be single
# element exactly").
SOLE_KEY = "<the Secret's only key>"


def consumers(manifests: Path) -> dict[str, tuple[str, str, dict[str, str]]]:
    """Who reads a seeded Secret -> (namespace, Secret name, {what: key}), from each
    consumer's own file. The keys third-party software reads are its documented contract:
    Grafana's userKey/passwordKey, Traefik's basic auth (SOLE_KEY), Fleet's HTTPS
    credentials (kubernetes.io/basic-auth: username, password), external-dns's mounted items."""
    out = {}

    def bundle(name):
        return load_yaml(fleet_file(BUNDLES_DIR / name))["defaultNamespace"], load_yaml(BUNDLES_DIR / name / "values.yaml")

    ns, values = bundle("monitoring")
    admin = values["grafana"]["admin"]
    out["grafana"] = (ns, admin["existingSecret"], {"user": admin["userKey"], "password": admin["passwordKey"]})

    ns, values = bundle("external-dns")
    (volume,) = [v for v in values["extraVolumes"] if "secret" in v]
    (item,) = volume["secret"]["items"]
    assert item["path"] == "azure.json", "the Azure provider reads /etc/kubernetes/azure.json"
    out["external-dns"] = (ns, volume["secret"]["secretName"], {"azure.json": item["key"]})

    # The Ingress runs through the Middleware, whose basicAuth reads the Secret.
    middleware, ingress = docs_of(manifests / "canarie-longhorn-ui.yaml")
    assert (middleware["kind"], ingress["kind"]) == ("Middleware", "Ingress")
    ns, name = middleware["metadata"]["namespace"], middleware["metadata"]["name"]
    routed = ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"]
    assert routed == f"{ns}-{name}@kubernetescrd", f"the Longhorn UI Ingress does not use the Middleware {ns}/{name}"
    out["longhorn-ui"] = (ns, middleware["spec"]["basicAuth"]["secret"], {"htpasswd": SOLE_KEY})

    (gitrepo,) = docs_of(manifests / "canarie-gitrepo.yaml")
    out["gitrepo"] = (gitrepo["metadata"]["namespace"], gitrepo["spec"]["clientSecretName"], {"user": "username", "password": "password"})
    return out


def seeded_data(manifests: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {
        (s["metadata"]["namespace"], s["metadata"]["name"]): {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for _, s in seeded_secrets(manifests).values()
    }


def seeded_types(manifests: Path) -> dict[tuple[str, str], str]:
    return {(s["metadata"]["namespace"], s["metadata"]["name"]): s.get("type", "Opaque") for _, s in seeded_secrets(manifests).values()}


def resolve(keys: dict[str, str], data: dict[str, str], kind: str) -> dict[str, str]:
    """The consumer's keys with SOLE_KEY replaced by the Secret's only key; a Secret that a
    SOLE_KEY reader would refuse (more or fewer keys, or of type basic-auth) fails here."""
    if SOLE_KEY not in keys.values():
        return keys
    assert kind != "kubernetes.io/basic-auth", "Traefik reads username/password, not htpasswd lines, from a basic-auth Secret"
    assert len(data) == 1, f"Traefik refuses a basicAuth Secret with {len(data)} keys ({sorted(data)}): it needs exactly one"
    (only,) = data
    return {what: only if key == SOLE_KEY else key for what, key in keys.items()}


def test_each_seeded_secret_is_exactly_what_its_consumer_reads(seeded):
    manifests, _ = seeded
    data = seeded_data(manifests)
    readers = {(ns, name): (who, keys) for who, (ns, name, keys) in consumers(manifests).items()}
    assert set(data) == set(readers), (
        f"seeded but read by nobody: {sorted(set(data) - set(readers))}; "
        f"read but not seeded: {sorted(set(readers) - set(data))}"
    )
    types = seeded_types(manifests)
    for ref, (who, keys) in readers.items():
        keys = resolve(keys, data[ref], types[ref])
        assert set(keys.values()) == set(data[ref]), f"{who} reads {sorted(keys.values())} from {ref}, the agent writes {sorted(data[ref])}"


def test_consumers_get_what_they_read(seeded):
    manifests, _ = seeded
    data = seeded_data(manifests)

    types = seeded_types(manifests)

    def read(who):
        ns, name, keys = consumers(manifests)[who]
        keys = resolve(keys, data[(ns, name)], types[(ns, name)])
        return {what: data[(ns, name)][key] for what, key in keys.items()}

    secrets = CONFIG["cluster_secrets"]
    assert read("gitrepo") == {"user": secrets["git_auth"]["username"], "password": SECRETS[secrets["git_auth"]["secret"]]}
    assert read("grafana") == {"user": "admin", "password": SECRETS[secrets["grafana_admin"]["secret"]]}
    user, hashed = read("longhorn-ui")["htpasswd"].rstrip("\n").split(":", 1)
    assert user == "admin" and hashed.startswith("$2y$10$") and len(hashed) == 60
    dns = secrets["external_dns_azure"]
    assert json.loads(read("external-dns")["azure.json"]) == {
        "tenantId": dns["tenant_id"],
        "subscriptionId": dns["subscription_id"],
        "resourceGroup": dns["resource_group"],
        "aadClientId": dns["client_id"],
        "aadClientSecret": SECRETS[dns["secret"]],
    }


def test_a_second_key_in_the_longhorn_ui_secret_is_caught():
    """Traefik refuses the Middleware's Secret unless it holds exactly one key, and then
    builds no route: the UI answers 404 instead of asking for the login."""
    assert resolve({"htpasswd": SOLE_KEY}, {"auth": "admin:$2y$..."}, "Opaque") == {"htpasswd": "auth"}
    with pytest.raises(AssertionError, match="exactly one"):
        resolve({"htpasswd": SOLE_KEY}, {"auth": "admin:$2y$...", "users": "admin:$2y$..."}, "Opaque")
    with pytest.raises(AssertionError, match="basic-auth"):
        resolve({"htpasswd": SOLE_KEY}, {"auth": "admin:$2y$..."}, "kubernetes.io/basic-auth")
