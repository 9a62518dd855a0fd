"""The cluster-wide facts in manifests/facts/ and what the tests need to hold files to them:
where each workload comes from (bundle, seeded chart or RKE2/Fleet themselves), the values
its chart runs with (pinned defaults merged with ours), and the host-access checks.

Checks are functions returning a list of problems (empty = fine), so the tests can also
run them on altered inputs and show that each one fails when it should.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from bundlelib import (
    BUNDLES_DIR,
    DEFERRED_DIR,
    REPO,
    chart_defaults,
    deep_merge,
    fleet_file,
    helm_options,
    load_yaml,
    load_yaml_docs,
    subchart_conditions,
    values_files,
)

FACTS = REPO / "manifests" / "facts"
SEED_DIR = REPO / "manifests" / "seed"
HELM_VALUES_DIR = REPO / "helm-values"
PSA_SOURCE = REPO / "agent" / "src" / "rke2" / "pod-security-admission.yaml"
KYVERNO_HOST_PATH = BUNDLES_DIR / "kyverno-policies" / "disallow-host-path.yaml"

LEVELS = ("privileged", "baseline")
KINDS = {"hostPath", "hostNetwork", "hostPID", "hostIPC", "hostPort", "privileged", "capabilities"}
# Pod Security Standards, baseline: capabilities a container may add
# (reference/kubernetes/pod-security-baseline.txt).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
# What each level admits of KINDS: baseline forbids every one of them.
ADMITS = {"privileged": KINDS, "baseline": set()}


@functools.cache
def namespaces() -> dict:
    return load_yaml(FACTS / "namespaces.yaml")["namespaces"]


@functools.cache
def workloads() -> dict:
    return load_yaml(FACTS / "host-access.yaml")["workloads"]


@functools.cache
def services() -> dict:
    return load_yaml(FACTS / "services.yaml")["services"]


def psa_exemptions() -> list[str]:
    (plugin,) = load_yaml(PSA_SOURCE)["plugins"]
    return plugin["configuration"]["exemptions"]["namespaces"]


def kyverno_host_path_exclusions() -> list[str]:
    policy = load_yaml(KYVERNO_HOST_PATH)
    (expr,) = policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    assert (expr["key"], expr["operator"]) == ("kubernetes.io/metadata.name", "NotIn"), expr
    return expr["values"]


# --- Where things come from -----------------------------------------------------------


def bundle_dir(name: str) -> Path:
    for base in (BUNDLES_DIR, DEFERRED_DIR):
        if fleet_file(base / name):
            return base / name
    raise AssertionError(f"no bundle directory {name} under manifests/bundles or manifests/deferred")


def is_shipped_bundle(name: str) -> bool:
    return bundle_dir(name).parent == BUNDLES_DIR


@functools.cache
def seed_doc(file: str) -> dict:
    (doc,) = load_yaml_docs(SEED_DIR / file)
    return doc


def seed_namespace(file: str) -> str | None:
    """Where a seeded manifest's workload runs: a HelmChart's targetNamespace, else the
    object's own namespace (the HelmChartConfig of RKE2's chart, the GitRepo); None for a
    cluster-scoped object (the IMDS egress policy), which lives in no namespace."""
    doc = seed_doc(file)
    return (doc.get("spec") or {}).get("targetNamespace") or doc["metadata"].get("namespace")


@dataclass
class Source:
    """A workload's origin: its namespace, and for charts the values it runs with."""

    label: str
    namespace: str
    shipped: bool
    chart: str | None = None
    ours: dict | None = None  # our values file(s), merged
    values: dict | None = None  # the chart's defaults with ours merged over them


def seed_values(file: str) -> tuple[str | None, dict, dict]:
    """(chart, our values, chart defaults) of a seeded manifest. The values file and the
    reference chart are the ones the seed tests pin (test_seed_manifests): a HelmChart's
    pinned chart, or for a HelmChartConfig the chart of that name in the pinned RKE2 release."""
    from test_seed_manifests import BUNDLED, CHARTS, VALUES_FILE

    doc = seed_doc(file)
    chart = doc["spec"].get("chart") or doc["metadata"]["name"]
    ours = (load_yaml(HELM_VALUES_DIR / VALUES_FILE[file]) or {}) if file in VALUES_FILE else {}
    reference = BUNDLED[chart] if doc["kind"] == "HelmChartConfig" else CHARTS.get(chart, (None, None))[1]
    defaults = (load_yaml(reference) or {}) if reference else {}
    return chart, ours, defaults


@functools.cache
def source_of(row_name: str) -> Source:
    source = workloads()[row_name]["source"]
    ((kind, name),) = source.items()
    if kind == "namespace":
        return Source(f"namespace {name}", name, True)
    if kind == "seed":
        chart, ours, defaults = seed_values(name)
        return Source(f"seed {name}", seed_namespace(name), True, chart, ours, deep_merge(defaults, ours))
    assert kind == "bundle", f"{row_name}: unknown source {source}"
    d = bundle_dir(name)
    spec = load_yaml(fleet_file(d)) or {}
    helm = helm_options(spec)
    namespace = spec.get("defaultNamespace")
    assert namespace, f"{row_name}: bundle {name} sets no defaultNamespace"
    if not helm:
        return Source(f"bundle {name}", namespace, is_shipped_bundle(name))
    ours = {}
    for path in values_files(d):
        ours = deep_merge(ours, load_yaml(path) or {})
    chart = helm["chart"]
    return Source(f"bundle {name}", namespace, is_shipped_bundle(name), chart, ours, deep_merge(chart_defaults(chart), ours))


# --- Values -----------------------------------------------------------------------------

MISSING = object()


def get_path(values, dotted: str):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def switch_value(values, dotted: str, chart: str | None):
    """The switch's value, or MISSING when it sits in a sub-chart its condition disables."""
    condition = subchart_conditions(chart).get(dotted.split(".")[0]) if chart else None
    if condition and get_path(values, condition) is False:
        return MISSING
    return get_path(values, dotted)


def switch_is_on(value, kinds: list[str]) -> bool:
    """A switch gives host access when true or a port number, when a volume list holds a hostPath volume,
    when a capabilities list adds one beyond baseline's, or when any other list or map is
    non-empty."""
    if value is MISSING or value is None:
        return False
    if isinstance(value, list):
        if "capabilities" in kinds and all(isinstance(v, str) for v in value):
            return any(cap.upper() not in BASELINE_CAPABILITIES for cap in value)
        if value and all(isinstance(v, dict) for v in value):
            return any("hostPath" in v for v in value)
        return bool(value)
    if isinstance(value, dict):
        return bool(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value != 0  # a port number (hostPort: 80); null or 0 binds nothing
    return value is True


def rows_by_values_source() -> dict[str, list[str]]:
    """Rows grouped by where their values come from (bundle or seed)."""
    out: dict[str, list[str]] = {}
    for name, row in workloads().items():
        ((kind, source),) = row["source"].items()
        if kind != "namespace":
            out.setdefault(f"{kind}:{source}", []).append(name)
    return out


def switches_of_chart(chart: str) -> dict[str, list[str]]:
    """Every switch any row declares for a chart (a chart can serve several rows and
    several releases, e.g. the stack and its CRD release)."""
    out: dict[str, list[str]] = {}
    for name in workloads():
        if source_of(name).chart == chart:
            out.update(workloads()[name].get("switches") or {})
    return out


def needs_problems(row_name: str, values: dict | None = None) -> list[str]:
    """The row's declared needs against what its switches turn on in `values` (default:
    the source's effective values)."""
    row = workloads()[row_name]
    switches = row.get("switches") or {}
    values = source_of(row_name).values if values is None else values
    problems = []
    needs = set(row["needs"])
    if not needs <= KINDS:
        problems.append(f"{row_name}: unknown kinds {sorted(needs - KINDS)}")
    switchable = {k for kinds in switches.values() for k in kinds}
    on: dict[str, list[str]] = {}
    for path, kinds in switches.items():
        value = switch_value(values or {}, path, source_of(row_name).chart)
        if switch_is_on(value, kinds):
            for kind in kinds:
                on.setdefault(kind, []).append(path)
    for kind in sorted(set(on) - needs):
        problems.append(f"{row_name}: {', '.join(on[kind])} turns on {kind}, which the row does not declare in needs")
    for kind in sorted((needs & switchable) - set(on)):
        problems.append(f"{row_name}: declares {kind}, but no value turns it on any more; update needs")
    return problems


def stray_switch_problems(source_key: str, values: dict | None = None) -> list[str]:
    """Switches of the same chart that belong to another row (another release of the
    chart) must be off in this source's values: each host access has its row."""
    rows = rows_by_values_source()[source_key]
    src = source_of(rows[0])
    values = src.values if values is None else values
    own = {p for r in rows for p in (workloads()[r].get("switches") or {})}
    problems = []
    for path, kinds in switches_of_chart(src.chart).items():
        if path not in own and switch_is_on(switch_value(values or {}, path, src.chart), kinds):
            problems.append(f"{src.label}: {path} turns on {', '.join(kinds)}, but no row of this source declares that switch")
    return problems


def admission_problems(row_name: str, levels: dict[str, str] | None = None) -> list[str]:
    """Whether the row's namespace admits its needs; `levels` overrides the table."""
    src = source_of(row_name)
    levels = levels or {}
    table = namespaces()
    if src.namespace not in table:
        return [f"{row_name}: its namespace {src.namespace} ({src.label}) is not in namespaces.yaml"]
    level = levels.get(src.namespace, table[src.namespace]["pod_security"])
    refused = set(workloads()[row_name]["needs"]) - ADMITS[level]
    if refused:
        return [
            f"{row_name} ({src.label}) needs {', '.join(sorted(refused))}, which Pod Security level "
            f"{level} of namespace {src.namespace} refuses: its pods would never be created"
        ]
    return []


# Keys of chart values that give a pod host access, wherever they appear.
HOST_KEYS = {"hostNetwork", "hostPID", "hostIPC", "privileged"}
# Path segments of our values that touch host access; each key we set below one must be a
# switch or reviewed.
GUARDED_SEGMENTS = HOST_KEYS | {
    "hostPort", "hostPath", "capabilities", "securityContext", "podSecurityContext",
    "containerSecurityContext", "mounts", "volumes", "extraVolumes",
}  # fmt: skip


def host_related_paths(values, prefix: tuple[str, ...] = ()) -> set[str]:
    """The host-related values of a chart: HOST_KEYS leaves, hostPort (a number or .enabled),
    capabilities.add lists and volume lists holding a hostPath volume."""
    found: set[str] = set()
    if isinstance(values, dict):
        for key, value in values.items():
            here = prefix + (str(key),)
            if key in HOST_KEYS and not isinstance(value, (dict, list)):
                found.add(".".join(here))
            elif key == "hostPort" and isinstance(value, dict) and "enabled" in value:
                found.add(".".join(here + ("enabled",)))
            elif key == "hostPort" and not isinstance(value, (dict, list)):
                found.add(".".join(here))  # a port number, or null for none
            elif key == "add" and prefix[-1:] == ("capabilities",) and isinstance(value, list):
                found.add(".".join(here))
            elif isinstance(value, list) and any(isinstance(v, dict) and "hostPath" in v for v in value):
                found.add(".".join(here))
            else:
                found |= host_related_paths(value, here)
    return found


def guarded_leaves(values, prefix: tuple[str, ...] = ()) -> set[str]:
    """Leaf paths (lists are leaves) of our values under a GUARDED_SEGMENTS key."""
    out: set[str] = set()
    if isinstance(values, dict) and values:
        for key, value in values.items():
            out |= guarded_leaves(value, prefix + (str(key),))
    elif GUARDED_SEGMENTS & set(prefix):
        out.add(".".join(prefix))
    return out
