"""What `canarie-agent render` writes, checked against the pinned reference data.

Renders examples/server.json and examples/agent.json with the real binary
(target/debug/canarie-agent, built by `cargo build --workspace --bins`) and reads the output
with PyYAML, a YAML 1.1 parser like the Go parsers RKE2 uses. Schemas and flag lists are read
in place from reference/. Nothing touches the network.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from bundlelib import CUSTOM_KINDS, crd_header, deep_merge, rke2_chart_reference, strict_schema

REPO = Path(__file__).resolve().parents[2]
REF = REPO / "reference"
BIN = REPO / "target" / "debug" / "canarie-agent"
EXAMPLES = REPO / "examples"
HELM_VALUES = REPO / "helm-values"
BUNDLES = REPO / "manifests" / "bundles"
MANIFESTS_DIR = "var/lib/rancher/rke2/server/manifests"
CONFIG = "etc/rancher/rke2/config.yaml"
TOKEN = "etc/rancher/rke2/config.yaml.d/10-token.yaml"
PSA = "etc/rancher/rke2/canarie-pss.yaml"

# The seeded file on the node -> its values file in helm-values/.
VALUES_FILE = {
    "rke2-cilium-config.yaml": "cilium.yaml",
    "rke2-traefik-config.yaml": "traefik.yaml",
    "canarie-longhorn.yaml": "longhorn.yaml",
    "canarie-fleet-crd.yaml": "fleet-crd.yaml",
    "canarie-fleet.yaml": "fleet.yaml",
}

# The one copy of the policy that keeps pods away from IMDS (manifests/seed, as it is).
IMDS_POLICY = "canarie-deny-imds-egress.yaml"

FLEET_VERSION = "0.16.1"  # reference/fleet/*.v0.16.1.yaml
LONGHORN_VERSION = "1.12.1"  # reference/charts/longhorn/longhorn-1.12.1.*
# HelmChart spec.chart -> (pinned version, the pinned chart's values.yaml or None when the
# reference has no values file for it).
CHARTS = {
    "longhorn": (LONGHORN_VERSION, REF / f"charts/longhorn/longhorn-{LONGHORN_VERSION}.values.yaml"),
    "fleet": (FLEET_VERSION, REF / f"fleet/fleet-chart-values.v{FLEET_VERSION}.yaml"),
    "fleet-crd": (FLEET_VERSION, None),
}
# The charts RKE2 bundles (HelmChartConfig name -> reference values.yaml), at the versions of
# the pinned RKE2 release (reference/rke2/chart_versions-<tag>.yaml; test_lifecycle.py).
BUNDLED = {name: rke2_chart_reference(name) for name in ("rke2-cilium", "rke2-traefik")}
# Charts whose values.schema.json Helm validates the coalesced values against.
VALUES_SCHEMAS = {
    "fleet": REF / f"fleet/fleet-chart-values.schema.v{FLEET_VERSION}.json",
    "rke2-cilium": rke2_chart_reference("rke2-cilium", "values.schema.json"),
}

SCHEMAS = {
    "fleet": REF / f"fleet/fleet-chart-values.schema.v{FLEET_VERSION}.json",
    "rke2-cilium": REF / "charts/cilium/rke2-cilium-1.19.601.values.schema.json",
}

SCHEMAS = {
    "HelmChart": REF / "helm-controller/helmchart.v1.schema.json",
    "HelmChartConfig": REF / "helm-controller/helmchartconfig.v1.schema.json",
    "GitRepo": REF / "fleet/gitrepo.v1alpha1.schema.json",
}


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def render(config: Path, out: Path) -> subprocess.CompletedProcess:
    assert BIN.is_file(), f"{BIN} is missing: run `cargo build --workspace --bins` first"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIE_")}
    return subprocess.run(
        [str(BIN), "render", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> dict[str, Path]:
    dirs = {}
    # The example server has no data disk; this one does, to cover a server that is also a
    # storage node (the label and the drop-in) and a three-node Longhorn.
    server = load_json(EXAMPLES / "server.json")
    server["data_disk"] = {"lun": 0}
    server["cluster"]["storage_nodes"] = 3
    configs = tmp_path_factory.mktemp("configs")
    (configs / "server.json").write_text(json.dumps(server))
    dirs["server_config"] = configs / "server.json"
    for role, config in (("server", configs / "server.json"), ("agent", EXAMPLES / "agent.json")):
        d = tmp_path_factory.mktemp(role)
        r = render(config, d)
        assert r.returncode == 0, r.stderr
        printed = {str(Path(line).relative_to(d)) for line in r.stdout.splitlines()}
        assert printed == tree(d), "render prints exactly the files it wrote"
        dirs[role] = d
    return dirs


def manifests(out_dir: Path) -> dict[str, dict]:
    d = out_dir / MANIFESTS_DIR
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(d.glob("*.yaml"))}


def bundle_dirs() -> list[str]:
    """manifests/bundles/<dir> holding a fleet.yaml (at any depth), as build.rs finds them."""
    if not BUNDLES.is_dir():
        return []
    found = []
    for d in sorted(BUNDLES.iterdir()):
        if d.is_dir() and any(p.is_file() for n in ("fleet.yaml", "fleet.yml") for p in d.rglob(n)):
            found.append(f"manifests/bundles/{d.name}")
    return found


# ---------------------------------------------------------------- files and config.yaml


def test_each_role_gets_exactly_its_files(out):
    expected_server = {CONFIG, TOKEN, PSA, "etc/systemd/system/rke2-server.service.d/10-canarie-data-disk.conf"}
    expected_server |= {f"{MANIFESTS_DIR}/{name}" for name in VALUES_FILE}
    expected_server.add(f"{MANIFESTS_DIR}/{IMDS_POLICY}")
    # The per-cluster values for the Fleet bundles (test_cluster_values.py checks it).
    expected_server.add(f"{MANIFESTS_DIR}/canarie-cluster-values.yaml")
    if bundle_dirs():
        expected_server.add(f"{MANIFESTS_DIR}/canarie-gitrepo.yaml")
    assert tree(out["server"]) == expected_server
    assert tree(out["agent"]) == {CONFIG, TOKEN, "etc/systemd/system/rke2-agent.service.d/10-canarie-data-disk.conf"}


@pytest.mark.parametrize("role", ["server", "agent"])
def test_config_keys_are_rke2_flags_of_the_role(out, role):
    flags = {f["name"]: f for f in load_json(REF / "rke2/flags.json")[role]}
    config = yaml.safe_load((out[role] / CONFIG).read_text())
    for key, value in config.items():
        assert key in flags, f"{key} is not an RKE2 {role} flag"
        kind = flags[key]["type"]
        if kind == "string-slice":
            # A list, or a single scalar (flags.json notes: one repeated --flag per item).
            items = value if isinstance(value, list) else [value]
            assert all(isinstance(v, str) for v in items), key
        elif kind == "bool":
            assert isinstance(value, bool), key
        elif kind == "int":
            assert isinstance(value, int) and not isinstance(value, bool), key
        else:
            assert kind == "string" and isinstance(value, str), f"{key}: {value!r} is not a {kind}"
        for item in value if isinstance(value, list) else [value]:
            allowed = flags[key].get("valid_values")
            if allowed:
                assert item in allowed, f"{key}: {item!r} not in {allowed}"


def test_server_and_agent_settings(out):
    server = yaml.safe_load((out["server"] / CONFIG).read_text())
    assert server["cni"] == "cilium"
    assert server["disable-kube-proxy"] is True
    # RKE2's Traefik; the agent's ingress-nginx AddOn of older clusters is uninstalled.
    assert server["ingress-controller"] == ["traefik"]
    assert server["disable"] == ["canarie-ingress-nginx"]
    assert server["tls-san"] == ["cp-01", "api.canarie.example.com", "20.30.40.50"]
    assert "node.longhorn.io/create-default-disk=true" in server["node-label"]
    assert server["pod-security-admission-config-file"] == "/" + PSA
    assert "server" not in server, "the first server starts the cluster"
    # YAML 1.1 (RKE2's parser) must read a string, not the octal number 384.
    assert server["write-kubeconfig-mode"] == "0600"
    assert 'write-kubeconfig-mode: "0600"' in (out["server"] / CONFIG).read_text()

    agent = yaml.safe_load((out["agent"] / CONFIG).read_text())
    assert agent["server"] == "https://10.20.0.4:9345"
    assert agent["node-name"] == "wk-01"
    assert "node.longhorn.io/create-default-disk=true" in agent["node-label"]
    server_only = {f["name"] for f in load_json(REF / "rke2/flags.json")["server"]} - {
        f["name"] for f in load_json(REF / "rke2/flags.json")["agent"]
    }
    assert not server_only & agent.keys()


def test_token_dropin_is_a_placeholder_with_mode_0600(out):
    for role in ("server", "agent"):
        path = out[role] / TOKEN
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = yaml.safe_load(path.read_text())["token"]
        assert isinstance(token, str) and token.startswith("REDACTED")


def test_data_disk_dropin_requires_the_mount(out):
    text = (out["agent"] / "etc/systemd/system/rke2-agent.service.d/10-canarie-data-disk.conf").read_text()
    assert "[Unit]\nRequiresMountsFor=/var/lib/longhorn\n" in text


def test_psa_enforces_baseline_and_exempts_every_seeded_namespace(out):
    psa = yaml.safe_load((out["server"] / PSA).read_text())
    assert psa["kind"] == "AdmissionConfiguration"
    (plugin,) = psa["plugins"]
    conf = plugin["configuration"]
    assert plugin["name"] == "PodSecurity" and conf["kind"] == "PodSecurityConfiguration"
    assert conf["defaults"]["enforce"] == "baseline"
    exempt = set(conf["exemptions"]["namespaces"])
    for doc in manifests(out["server"]).values():
        for ns in (doc["metadata"].get("namespace"), (doc.get("spec") or {}).get("targetNamespace")):
            if ns:
                assert ns in exempt, ns


# ---------------------------------------------------------------- manifests


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Keys the API server would prune: the CRD schemas have no additionalProperties: false,
    so a plain JSON-Schema validation would accept a misspelt field."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None or extra is False:
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def test_manifests_validate_against_their_crd_schemas(out):
    docs = manifests(out["server"])
    assert docs, "a server gets manifests"
    for name, doc in docs.items():
        if doc["kind"] not in SCHEMAS:
            continue  # core kinds: test_cluster_values.py validates them
        schema = load_json(SCHEMAS[doc["kind"]])
        jsonschema.Draft7Validator(schema).validate(doc)
        assert not unknown_fields(doc, schema), f"{name}: unknown fields {unknown_fields(doc, schema)}"
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"], name


def test_values_content_is_the_values_file_and_set_values_are_strings(out):
    docs = manifests(out["server"])
    for name, values in VALUES_FILE.items():
        spec = docs[name]["spec"]
        assert spec["valuesContent"] == (HELM_VALUES / values).read_text(), name
        for key, value in spec.get("set", {}).items():
            assert isinstance(value, str), f"{name}: set {key} = {value!r} must be a string"
    longhorn = docs["canarie-longhorn.yaml"]["spec"]["set"]
    assert longhorn == {
        "persistence.defaultClassReplicaCount": "3",
        "defaultSettings.defaultReplicaCount": "3",
        # cluster.longhorn_data_path's default, the default data_disk.mount_point
        "defaultSettings.defaultDataPath": "/var/lib/longhorn",
    }
    traefik = docs["rke2-traefik-config.yaml"]["spec"]
    # The load balancer's public IP is every Ingress's status address (external-dns follows).
    assert traefik["values"] == {"providers": {"kubernetesIngress": {"ingressEndpoint": {"ip": "20.30.40.50"}}}}
    assert "set" not in traefik, "a HelmChartConfig has no set"


def test_cilium_values_match_the_chart_schema_and_the_kpr_docs(out):
    doc = manifests(out["server"])["rke2-cilium-config.yaml"]
    assert (doc["kind"], doc["metadata"]["name"], doc["metadata"]["namespace"]) == (
        "HelmChartConfig",
        "rke2-cilium",
        "kube-system",
    )
    values = yaml.safe_load(doc["spec"]["valuesContent"])
    jsonschema.Draft7Validator(load_json(VALUES_SCHEMAS["rke2-cilium"])).validate(values)
    # The template accepts only true/false (the schema also lets "strict" through).
    assert values["kubeProxyReplacement"] in (True, "true")
    docs_example = yaml.safe_load(
        (REF / "rke2/rke2-cilium-config.kpr.example.yaml").read_text()
    )["spec"]["valuesContent"]
    assert values == yaml.safe_load(docs_example)


def value_paths(values, prefix=()):
    if isinstance(values, dict) and values:
        for k, v in values.items():
            yield from value_paths(v, prefix + (str(k),))
    elif prefix:
        yield prefix


def exists_in(reference, path: tuple[str, ...]) -> bool:
    node = reference
    for part in path:
        if isinstance(node, dict) and node == {}:
            return True  # a free-form map in the chart (e.g. controller.extraArgs)
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_chart_values_use_only_keys_of_the_pinned_chart(out):
    for name, doc in manifests(out["server"]).items():
        spec = doc.get("spec") or {}
        if doc["kind"] == "HelmChart":
            chart = spec["chart"]
            version, reference_file = CHARTS[chart]
            assert spec["version"] == version, f"{name}: chart version {spec['version']} is not the pinned {version}"
        elif doc["kind"] == "HelmChartConfig":
            chart = doc["metadata"]["name"]
            reference_file = BUNDLED[chart]
        else:
            continue
        values = yaml.safe_load(spec["valuesContent"]) or {}
        paths = list(value_paths(values)) + list(value_paths(spec.get("values") or {}))
        paths += [tuple(k.split(".")) for k in spec.get("set", {})]
        if reference_file is None:
            assert not paths, f"{name}: no pinned values.yaml to check {paths} against"
            continue
        reference = yaml.safe_load(reference_file.read_text())
        for path in paths:
            assert exists_in(reference, path), f"{name}: {'.'.join(path)} is not a key of {reference_file.name}"
        schema = VALUES_SCHEMAS.get(chart)
        if schema:
            # Helm validates the chart defaults coalesced with ours.
            merged = deep_merge(reference, values)
            merged = deep_merge(merged, spec.get("values") or {})
            for key, value in spec.get("set", {}).items():
                merged = deep_merge(merged, nested(key, value))
            jsonschema.Draft7Validator(load_json(schema)).validate(merged)


def nested(dotted: str, value) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def test_key_check_catches_a_misspelt_traefik_key():
    reference = yaml.safe_load(BUNDLED["rke2-traefik"].read_text())
    assert exists_in(reference, ("providers", "kubernetesIngress", "ingressEndpoint", "ip"))
    assert not exists_in(reference, ("providers", "kubernetesIngress", "ingressEndpoint", "address"))


def test_traefik_runs_on_the_workers_bound_to_80_and_443(out):
    """The load balancer sends 80/443 to the workers (infra-tofu lb rules, pool "workers");
    Traefik must listen there, and only there."""
    values = yaml.safe_load(manifests(out["server"])["rke2-traefik-config.yaml"]["spec"]["valuesContent"])
    merged = deep_merge(yaml.safe_load(BUNDLED["rke2-traefik"].read_text()), values)
    assert merged["deployment"]["kind"] == "DaemonSet"
    assert (merged["ports"]["web"]["hostPort"], merged["ports"]["websecure"]["hostPort"]) == (80, 443)
    assert merged["hostNetwork"] is False
    (term,) = merged["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}
    assert merged["providers"]["kubernetesIngress"]["publishedService"]["enabled"] is False
    lb = (REPO / "infra-tofu" / "locals.tf").read_text()
    for port in (80, 443):
        assert re.search(rf'= {{ pool = "workers", port = {port} }}', lb), f"the load balancer no longer sends {port} to the workers"


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory) -> Path:
    """A server without git_repo: no Fleet, so nothing but the seed can deny IMDS."""
    config = load_json(EXAMPLES / "server.json")
    del config["cluster"]["git_repo"]
    d = tmp_path_factory.mktemp("bare")
    (d / "server.json").write_text(json.dumps(config))
    r = render(d / "server.json", d / "out")
    assert r.returncode == 0, r.stderr
    return d / "out"


def test_every_server_denies_pod_egress_to_imds_from_its_first_start(out, bare_server):
    """The rendered server manifests carry the CiliumClusterwideNetworkPolicy, valid against
    the pinned CRD (reference/crds/cilium), with or without Fleet."""
    schema_file, crd_file = CUSTOM_KINDS[("cilium.io/v2", "CiliumClusterwideNetworkPolicy")]
    schema = load_json(REF / schema_file)
    header = crd_header(crd_file)
    assert "canarie-gitrepo.yaml" not in manifests(bare_server)
    for tree in (out["server"], bare_server):
        policy = manifests(tree)[IMDS_POLICY]
        group, version = policy["apiVersion"].split("/")
        assert (group, policy["kind"]) == (header["group"], header["kind"])
        assert version in header["served"] and header["scope"] == "Cluster"
        assert "namespace" not in policy["metadata"]
        jsonschema.Draft7Validator(schema).validate(policy)
        jsonschema.Draft7Validator(strict_schema(schema)).validate(policy)
        spec = policy["spec"]
        assert spec["endpointSelector"] == {}, "every pod"
        assert spec["egressDeny"] == [{"toCIDR": ["169.254.169.254/32"]}]
        # egressDeny alone turns on egress default-deny for every selected pod (CRD docs of
        # enableDefaultDeny); both directions must be switched off explicitly.
        assert spec["enableDefaultDeny"] == {"egress": False, "ingress": False}
        for allow in ("egress", "ingress", "ingressDeny", "nodeSelector", "specs"):
            assert allow not in spec
        # Fleet's former copy was deny-pod-egress-to-imds: when an upgraded cluster's Fleet
        # removes it, it must not take this one along.
        assert policy["metadata"]["name"] == "canarie-deny-pod-egress-to-imds"


def test_the_imds_policy_has_one_source():
    """The seed is the only copy: no Fleet bundle (shipped or deferred) carries another."""
    for path in (REPO / "manifests").rglob("*.yaml"):
        if path.parent.name == "seed":
            continue
        text = path.read_text(encoding="utf-8")
        assert "169.254.169.254" not in text and "CiliumClusterwideNetworkPolicy" not in text, (
            f"{path.relative_to(REPO)}: the IMDS policy lives in manifests/seed/{IMDS_POLICY} only"
        )


def test_pinned_versions_are_the_reference_charts():
    assert yaml.safe_load((REF / f"charts/longhorn/longhorn-{LONGHORN_VERSION}.Chart.yaml").read_text())["version"] == CHARTS["longhorn"][0]
    for chart, values in BUNDLED.items():
        version = values.name.removeprefix(f"{chart}-").removesuffix(".values.yaml")
        assert yaml.safe_load(values.with_name(f"{chart}-{version}.Chart.yaml").read_text())["version"] == version


def test_gitrepo_lists_exactly_the_bundle_directories(out):
    docs = manifests(out["server"])
    paths = bundle_dirs()
    if not paths:
        assert "canarie-gitrepo.yaml" not in docs, "no bundles: an empty paths list would deploy the whole repo"
        return
    repo = docs["canarie-gitrepo.yaml"]
    assert repo["metadata"] == {"name": "canarie", "namespace": "fleet-local"}
    config = load_json(EXAMPLES / "server.json")["cluster"]["git_repo"]
    assert repo["spec"]["repo"] == config["url"]
    assert repo["spec"]["branch"] == config["branch"]
    assert repo["spec"]["clientSecretName"] == config["auth_secret"]
    assert repo["spec"]["paths"] == paths
    assert not any(p.startswith("manifests/deferred") for p in repo["spec"]["paths"])


# ---------------------------------------------------------------- the command


def test_bad_config_is_one_line_exit_1_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    config = load_json(EXAMPLES / "agent.json")
    del config["cluster"]["server_url"]
    bad.write_text(json.dumps(config))
    out_dir = tmp_path / "out"
    r = render(bad, out_dir)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cluster.server_url" in lines[0], r.stderr
    assert not out_dir.exists()


def test_rendering_again_changes_nothing(out, tmp_path):
    before = {p: (out["server"] / p).read_bytes() for p in tree(out["server"])}
    mtimes = {p: (out["server"] / p).stat().st_mtime_ns for p in before}
    r = render(out["server_config"], out["server"])
    assert r.returncode == 0, r.stderr
    assert {p: (out["server"] / p).read_bytes() for p in before} == before
    assert {p: (out["server"] / p).stat().st_mtime_ns for p in before} == mtimes, "unchanged files are not rewritten"
