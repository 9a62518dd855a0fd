"""Shared helpers for the Fleet bundle checks (test_bundles*.py).

Everything here reads the repository and the pinned reference data in reference/
(reference/INDEX.yaml says where each file came from); nothing touches the network.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
REF = REPO / "reference"
BUNDLES_DIR = REPO / "manifests" / "bundles"
DEFERRED_DIR = REPO / "manifests" / "deferred"
HELM_VALUES_DIR = REPO / "helm-values"
DOCS = REPO / "docs" / "fleet-bundles.md"

# The GitRepo canarie-agent seeds (manifests/seed, other owner): name and namespace are
# part of every bundle name Fleet derives, so dependsOn entries depend on them.
GITREPO_NAME = "canarie"
GITREPO_NAMESPACE = "fleet-local"

# The per-cluster values contract (docs/fleet-bundles.md, "Cluster values").
CLUSTER_VALUES_CONFIGMAP = "canarie-cluster-values"
CLUSTER_VALUES_NAMESPACE = "fleet-local"

FLEET_FILE_NAMES = ("fleet.yaml", "fleet.yml")

# The RKE2 release the agent is built for: its one source is agent/src/rke2/mod.rs.
RKE2_VERSION_SOURCE = REPO / "agent" / "src" / "rke2" / "mod.rs"


def rke2_version() -> str:
    match = re.search(r'^pub const RKE2_VERSION: &str = "(v[^"]+)";$', RKE2_VERSION_SOURCE.read_text(), flags=re.M)
    assert match, f"{RKE2_VERSION_SOURCE.relative_to(REPO)} lost its RKE2_VERSION constant"
    return match.group(1)


def kubernetes_minor() -> str:
    """RKE2 vX.Y.Z+rke2rN runs Kubernetes X.Y.Z: the minor every manifest is validated for."""
    return ".".join(rke2_version().lstrip("v").split(".")[:2])


# kubernetes-validate ships one schema set per minor, named X.Y.0.
KUBERNETES_VERSION = f"{kubernetes_minor()}.0"
MAX_HELM_RELEASE_NAME = 53


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_docs(path: Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- Fleet conventions -----------------------------------------------------------------


def fleet_file(directory: Path) -> Path | None:
    for name in FLEET_FILE_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def shipped_bundle_dirs() -> list[Path]:
    """The convention canarie-agent uses to compute the GitRepo's paths: every directory
    manifests/bundles/<name>/ that holds a fleet.yaml ships, nothing else does."""
    return sorted(d for d in BUNDLES_DIR.iterdir() if d.is_dir() and fleet_file(d))


def deferred_bundle_dirs() -> list[Path]:
    return sorted(d for d in DEFERRED_DIR.iterdir() if d.is_dir() and fleet_file(d))


def gitrepo_path(bundle_dir: Path) -> str:
    return bundle_dir.relative_to(REPO).as_posix()


def _md5_hex(s: str, length: int) -> str:
    return hashlib.md5(s.encode()).hexdigest()[:length]


def _limit(s: str, count: int) -> str:
    """Fleet's names.Limit: cut to count chars ending in "-" + 5 hex chars of md5."""
    if len(s) <= count:
        return s
    hex_len, sep = 5, "-"
    if count <= hex_len + len(sep):
        return s[:count]
    keep = count - hex_len - len(sep)
    if s[keep - 1] == sep:
        sep = ""
    return f"{s[:keep]}{sep}{_md5_hex(s, hex_len)}"


_DISALLOWED = re.compile(r"[^a-zA-Z0-9-]+")
_HELM_RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def helm_release_name(original: str) -> str:
    """Port of Fleet's names.HelmReleaseName (rancher/fleet internal/names/name.go, see
    reference/fleet/install-and-naming.txt): the bundle name for an id."""
    s = original.replace("/", "-")
    if s != s.lower() or _DISALLOWED.search(s):
        s = f"{s}-{_md5_hex(s, 8)}"
    s = s.lower()
    s = _DISALLOWED.sub("-", s)
    s = re.sub("-+", "-", s).strip("-")
    if _HELM_RELEASE.match(s) and _DNS_LABEL.match(s):
        return _limit(s, MAX_HELM_RELEASE_NAME)
    return _md5_hex(original, 24)


def bundle_name(bundle_dir: Path) -> str:
    """Bundle name Fleet gives a directory of the canarie GitRepo: fleet.yaml `name:` if
    set, else HelmReleaseName(<gitrepo name>/<path relative to the repo root>)."""
    spec = load_yaml(fleet_file(bundle_dir)) or {}
    if spec.get("name"):
        return spec["name"]
    return helm_release_name(f"{GITREPO_NAME}/{gitrepo_path(bundle_dir)}")


# --- Schemas ----------------------------------------------------------------------------


def strict_schema(schema):
    """A copy of an OpenAPI/JSON schema in which every object that lists `properties`
    (and does not declare x-kubernetes-preserve-unknown-fields or its own
    additionalProperties) rejects unknown keys. The reference schemas are structural CRD
    schemas without additionalProperties:false: the API server silently prunes unknown
    fields, so a misspelt key would otherwise pass unnoticed."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for key, value in node.items():
                # Combinator branches list properties only to state what is required;
                # closing them would reject every other field.
                if key not in ("oneOf", "anyOf", "allOf", "not"):
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.lru_cache(maxsize=None)
def fleet_yaml_schema():
    return load_json(REF / "fleet" / "fleet.yaml.schema.json")


@functools.lru_cache(maxsize=None)
def pinned_charts():
    return load_yaml(REF / "lifecycle" / "pinned-charts.yaml")


@functools.lru_cache(maxsize=None)
def rke2_bundled_charts() -> dict[str, str]:
    """Chart name -> version of the charts the pinned RKE2 release installs itself
    (reference/rke2/chart_versions-<tag>.yaml)."""
    charts = load_yaml(REF / "rke2" / f"chart_versions-{rke2_version()}.yaml")["charts"]
    return {c["filename"].rsplit("/", 1)[1].removesuffix(".yaml"): str(c["version"]) for c in charts}


def rke2_chart_reference(name: str, suffix: str = "values.yaml") -> Path:
    """reference/charts/<dir>/<name>-<version>.<suffix> of a chart RKE2 bundles, at the
    version of the pinned release (rke2-traefik -> charts/traefik/rke2-traefik-40.1.009...)."""
    version = rke2_bundled_charts()[name]
    return REF / "charts" / name.removeprefix("rke2-") / f"{name}-{version}.{suffix}"


@functools.lru_cache(maxsize=None)
def lifecycle_facts():
    return load_yaml(REF / "lifecycle" / "lifecycle-facts.yaml")


# Custom resources we create, by (apiVersion, kind): the JSON schema of that CRD version
# and the CRD file that proves group, kind, scope and that the version is served.
CUSTOM_KINDS = {
    ("cert-manager.io/v1", "ClusterIssuer"): (
        "crds/cert-manager/clusterissuer.cert-manager.io.v1.schema.json",
        "crds/cert-manager/cert-manager.io_clusterissuers.v1.21.1.crd.yaml",
    ),
    ("policies.kyverno.io/v1", "ValidatingPolicy"): (
        "crds/kyverno/validatingpolicy.policies.kyverno.io.v1.schema.json",
        "crds/kyverno/policies.kyverno.io_validatingpolicies.v1.19.0.crd.yaml",
    ),
    ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"): (
        "crds/cilium/ciliumclusterwidenetworkpolicy.cilium.io.v2.schema.json",
        "crds/cilium/ciliumclusterwidenetworkpolicies.cilium.io.crd.yaml",
    ),
}


@functools.lru_cache(maxsize=None)
def crd_header(crd_file: str) -> dict:
    """group, kind, scope and served versions of a CRD, read from the top of the file and
    its version headers (CRDs run to megabytes; a full YAML parse would dominate the test
    time for four scalars)."""
    text = (REF / crd_file).read_text(encoding="utf-8")
    head = text.split("\n  versions:", 1)[0]
    spec = yaml.safe_load(head)["spec"]
    body = text.split("\n  versions:\n", 1)[1]
    item = re.match(r"( *)- ", body).group(1)
    field = item + "  "
    versions = []
    for block in re.split(rf"\n{item}- ", "\n" + body)[1:]:
        block = field + block
        name = re.search(rf'^{field}name: "?([a-z0-9]+)"?$', block, flags=re.M)
        is_served = re.search(rf"^{field}served: true$", block, flags=re.M)
        if name and is_served:
            versions.append(name.group(1))
    return {
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "scope": spec["scope"],
        "served": versions,
    }


# --- Helm values ------------------------------------------------------------------------


def chart_defaults(chart: str) -> dict:
    """The pinned chart's default values (values.yaml), with the defaults of the sub-charts
    kept in reference/ (Grafana, node-exporter) under their keys for kube-prometheus-stack
    (the parent's own block overrides them)."""
    version = chart_version(chart)
    base = REF / "charts" / chart
    defaults = load_yaml(base / f"{chart}-{version}.values.yaml") or {}
    if chart == "kube-prometheus-stack":
        defaults = dict(defaults)
        for sub_chart in ("grafana", "prometheus-node-exporter"):
            # subcharts.<name> reads "<version>[ from <repo> (...)]" in the pin file.
            sub_version = str(chart_pin(chart)["subcharts"][sub_chart]).split()[0]
            sub = load_yaml(base / f"{sub_chart}-{sub_version}.values.yaml") or {}
            defaults[sub_chart] = deep_merge(sub, defaults.get(sub_chart) or {})
    return defaults


def subchart_conditions(chart: str) -> dict[str, str]:
    """Sub-chart name -> the value that enables it (Chart.yaml `condition`), for a pinned
    chart whose Chart.yaml is in reference/: Helm renders nothing of a disabled sub-chart."""
    if chart not in pinned_charts() and chart not in DEFERRED_PINS:
        return {}  # RKE2's bundled charts: no sub-chart conditions are used
    path = REF / "charts" / chart / f"{chart}-{chart_version(chart)}.Chart.yaml"
    if not path.is_file():
        return {}
    deps = (load_yaml(path) or {}).get("dependencies") or []
    return {d.get("alias") or d["name"]: d["condition"] for d in deps if d.get("condition")}


# Falco is deferred and therefore not in lifecycle/pinned-charts.yaml; its pin is the one
# documented in charts/falco/SOURCE.txt (no values.schema.json).
DEFERRED_PINS = {"falco": {"repo": "https://falcosecurity.github.io/charts", "version": "9.1.0", "values_schema": "none"}}


def chart_pin(chart: str) -> dict:
    return pinned_charts().get(chart) or DEFERRED_PINS[chart]


def chart_version(chart: str) -> str:
    return str(chart_pin(chart)["version"])


def chart_values_schema(chart: str):
    """The chart's values.schema.json when the pinned chart ships one, else None."""
    ref = chart_pin(chart).get("values_schema")
    if not ref or ref == "none":
        return None
    return load_json(REF / ref)


def deep_merge(base, override):
    """Helm's coalescing of values: maps merge recursively, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = deep_merge(base.get(key), value) if key in base else value
        return out
    return override


def leaf_paths(values, prefix=()):
    """(path tuple, value) for every leaf; lists count as leaves."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaf_paths(value, prefix + (key,))
    else:
        yield prefix, values


# --- Bundle contents --------------------------------------------------------------------


def helm_options(spec: dict) -> dict | None:
    helm = spec.get("helm")
    return helm if helm and helm.get("chart") else None


def values_files(bundle_dir: Path) -> list[Path]:
    helm = (load_yaml(fleet_file(bundle_dir)) or {}).get("helm") or {}
    return [bundle_dir / f for f in helm.get("valuesFiles") or []]


def resource_files(bundle_dir: Path) -> list[Path]:
    """Files Fleet loads as bundle resources: everything in the directory except
    fleet.yaml, the values files and hidden files (internal/bundlereader)."""
    skip = {fleet_file(bundle_dir)} | set(values_files(bundle_dir))
    return sorted(
        p
        for p in bundle_dir.rglob("*")
        if p.is_file() and p not in skip and not any(part.startswith(".") for part in p.relative_to(bundle_dir).parts)
    )


def manifest_objects(bundle_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in resource_files(bundle_dir):
        for doc in load_yaml_docs(path):
            out.append((path, doc))
    return out


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=6, mtime=0))
