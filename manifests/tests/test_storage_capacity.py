"""Storage budget: every PersistentVolumeClaim the Fleet bundles and the seeded charts ask
for, times its count, fits what Longhorn will schedule on each storage node, computed from
the files: the volume sizes in the values files (over the pinned charts' defaults), the
Longhorn settings in helm-values/longhorn.yaml, the replica count the agent renders, and
the default disk size and worker count in infra-tofu/variables.tf. The data disk's
filesystem is made by the real mkfs.ext4 (as the agent makes it) on a sparse file of that
size, so its own overhead counts. Longhorn's rule: reference/charts/longhorn/
longhorn-1.7-replica-scheduling.txt. The result is stated in docs/rke2-and-manifests.md,
"Storage budget", and checked against it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import hcl2
import pytest
import yaml

from bundlelib import REPO, chart_defaults, deep_merge, fleet_file, helm_options, load_yaml, manifest_objects, shipped_bundle_dirs, values_files
from clusterfacts import MISSING, SEED_DIR, get_path, seed_doc, seed_values
from test_seed_manifests import render

LONGHORN_VALUES = REPO / "helm-values" / "longhorn.yaml"
VARIABLES_TF = REPO / "infra-tofu" / "variables.tf"
DOCS = REPO / "docs" / "rke2-and-manifests.md"
GIB = 1024**3

# Where each pinned chart keeps the volumes it claims: a name, when the component is on,
# the size, and how many claims of that size it makes. Components of a chart that never
# claim a volume have no entry; charts without any entry claim none (cert-manager,
# external-dns, kyverno, rke2-traefik, rke2-cilium, fleet, longhorn itself). `covers` are the value
# paths the entry owns: any key of ours about storage must be under one (or in
# NOT_VOLUMES), so a new volume cannot be switched on without being counted.


@dataclass
class Volume:
    name: str
    on: object  # values -> bool
    size: str
    count: object  # values -> int
    storage_class: str
    covers: tuple[str, ...]


def v(values, path, default=None):
    value = get_path(values, path)
    return default if value is MISSING or value is None else value


VOLUMES: dict[str, list[Volume]] = {
    "kube-prometheus-stack": [
        Volume(
            "prometheus",
            lambda x: v(x, "prometheus.enabled", True) and v(x, "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate") is not None,
            "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec.resources.requests.storage",
            lambda x: v(x, "prometheus.prometheusSpec.replicas", 1) * v(x, "prometheus.prometheusSpec.shards", 1),
            "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec.storageClassName",
            ("prometheus.prometheusSpec.storageSpec",),
        ),
        Volume(
            "alertmanager",
            lambda x: v(x, "alertmanager.enabled", True) and v(x, "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate") is not None,
            "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate.spec.resources.requests.storage",
            lambda x: v(x, "alertmanager.alertmanagerSpec.replicas", 1),
            "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate.spec.storageClassName",
            ("alertmanager.alertmanagerSpec.storage",),
        ),
        Volume(
            "thanos-ruler",
            lambda x: v(x, "thanosRuler.enabled", False) and v(x, "thanosRuler.thanosRulerSpec.storage.volumeClaimTemplate") is not None,
            "thanosRuler.thanosRulerSpec.storage.volumeClaimTemplate.spec.resources.requests.storage",
            lambda x: v(x, "thanosRuler.thanosRulerSpec.replicas", 1),
            "thanosRuler.thanosRulerSpec.storage.volumeClaimTemplate.spec.storageClassName",
            ("thanosRuler.thanosRulerSpec.storage",),
        ),
        # One claim shared by the Deployment's pods (ReadWriteOnce, Recreate).
        Volume(
            "grafana",
            lambda x: v(x, "grafana.enabled", True) and v(x, "grafana.persistence.enabled", False) and v(x, "grafana.persistence.type", "pvc") == "pvc",
            "grafana.persistence.size",
            lambda x: 1,
            "grafana.persistence.storageClassName",
            ("grafana.persistence",),
        ),
    ],
    "loki": [
        Volume(
            "loki",
            lambda x: v(x, "deploymentMode") in ("Monolithic", "SingleBinary") and v(x, "singleBinary.persistence.enabled", False),
            "singleBinary.persistence.size",
            lambda x: v(x, "singleBinary.replicas", 0),
            "singleBinary.persistence.storageClass",
            ("singleBinary.persistence",),
        ),
        *(
            Volume(
                f"loki-{part}",
                lambda x, part=part: v(x, "deploymentMode") != "Monolithic" and v(x, f"{part}.replicas", 0) > 0 and v(x, f"{part}.persistence.volumeClaimsEnabled", True),
                f"{part}.persistence.size",
                lambda x, part=part: v(x, f"{part}.replicas", 0),
                f"{part}.persistence.storageClass",
                (f"{part}.persistence",),
            )
            for part in ("write", "backend")
        ),
    ],
    "trivy-operator": [
        Volume(
            "trivy-server",
            lambda x: v(x, "operator.builtInTrivyServer", False) and v(x, "trivy.storageClassEnabled", True),
            "trivy.storageSize",
            lambda x: 1,
            "trivy.storageClassName",
            ("trivy.storageSize", "trivy.storageClassEnabled", "trivy.storageClassName"),
        ),
        Volume(
            "trivy-reports",
            lambda x: v(x, "alternateReportStorage.enabled", False),
            "alternateReportStorage.storage",
            lambda x: 1,
            "alternateReportStorage.storageClassName",
            ("alternateReportStorage",),
        ),
    ],
    "alloy": [
        Volume(
            "alloy",
            lambda x: v(x, "controller.type") == "statefulset" and bool(v(x, "controller.volumeClaimTemplates", [])),
            "controller.volumeClaimTemplates",
            lambda x: v(x, "controller.replicas", 1),
            "",
            ("controller.volumeClaimTemplates",),
        ),
    ],
}

# Keys of ours that mention storage but claim no volume.
NOT_VOLUMES = {
    "loki.storage.type": "Loki's chunk store kind (filesystem: on the single binary's volume)",
    "persistence.defaultClass": "Longhorn's StorageClass is the cluster's default",
    "defaultSettings.storageOverProvisioningPercentage": "the storage budget itself",
    "defaultSettings.storageMinimalAvailablePercentage": "the storage budget itself",
    "defaultSettings.storageReservedPercentageForDefaultDisk": "the storage budget itself",
}

STORAGE_WORDS = re.compile(r"(?i)persist|storage|volumeclaim|pvc")


def quantity_bytes(q) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?", str(q))
    assert m, f"{q!r} is not a storage quantity"
    factor = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": GIB, "Ti": 1024**4, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(float(m.group(1)) * factor[m.group(2)])


@dataclass
class Claim:
    where: str
    name: str
    size: int
    count: int
    storage_class: str | None


def bundle_values(d: Path) -> tuple[str | None, dict, dict]:
    helm = helm_options(load_yaml(fleet_file(d)) or {})
    ours = {}
    for path in values_files(d):
        ours = deep_merge(ours, load_yaml(path) or {})
    if not helm:
        return None, ours, ours
    return helm["chart"], ours, deep_merge(chart_defaults(helm["chart"]), ours)


def chart_sources() -> list[tuple[str, str | None, dict, dict, Path | None]]:
    """(where, chart, our values, effective values, bundle directory) of every chart the
    cluster installs: the shipped bundles' and the seeded ones."""
    out = []
    for d in shipped_bundle_dirs():
        chart, ours, values = bundle_values(d)
        out.append((d.name, chart, ours, values, d))
    for path in sorted(SEED_DIR.glob("*.yaml")):
        if seed_doc(path.name)["kind"] in ("HelmChart", "HelmChartConfig"):
            chart, ours, defaults = seed_values(path.name)
            out.append((f"seed/{path.name}", chart, ours, deep_merge(defaults, ours), None))
    return out


def claims() -> list[Claim]:
    out = []
    for where, chart, _, values, d in chart_sources():
        for vol in VOLUMES.get(chart, []):
            if vol.on(values):
                if vol.name == "alloy":
                    sizes = [t["spec"]["resources"]["requests"]["storage"] for t in v(values, vol.size)]
                else:
                    sizes = [v(values, vol.size)]
                for size in sizes:
                    out.append(Claim(where, vol.name, quantity_bytes(size), vol.count(values), v(values, vol.storage_class) if vol.storage_class else None))
        if d is None:
            continue
        # Raw manifests: PVCs and StatefulSets' claim templates.
        for _, obj in manifest_objects(d):
            if obj.get("kind") == "PersistentVolumeClaim":
                spec = obj["spec"]
                out.append(Claim(d.name, obj["metadata"]["name"], quantity_bytes(spec["resources"]["requests"]["storage"]), 1, spec.get("storageClassName")))
            if obj.get("kind") == "StatefulSet":
                for t in obj["spec"].get("volumeClaimTemplates") or []:
                    out.append(Claim(d.name, t["metadata"]["name"], quantity_bytes(t["spec"]["resources"]["requests"]["storage"]), obj["spec"].get("replicas", 1), t["spec"].get("storageClassName")))
    return out


def tofu_default(name: str):
    with open(VARIABLES_TF, encoding="utf-8") as f:
        for block in hcl2.load(f)["variable"]:
            if name in block:
                default = block[name]["default"]
                # python-hcl2 wraps attribute values in a one-element list.
                return default[0] if isinstance(default, list) and len(default) == 1 else default
    raise AssertionError(f"variables.tf has no variable {name}")


# Longhorn's own defaults when the chart leaves a setting null
# (reference/charts/longhorn/longhorn-1.7-replica-scheduling.txt).
LONGHORN_DEFAULTS = {
    "storageOverProvisioningPercentage": 100,
    "storageMinimalAvailablePercentage": 25,
    "storageReservedPercentageForDefaultDisk": 30,
}


def longhorn_settings() -> dict:
    """The settings Longhorn runs with: ours, else its defaults."""
    settings = load_yaml(LONGHORN_VALUES)["defaultSettings"]
    return {key: int(settings[key]) if settings.get(key) is not None else default for key, default in LONGHORN_DEFAULTS.items()}


def rendered_replicas(storage_nodes: int, tmp: Path) -> int:
    """The StorageClass's replica count the agent seeds for that many storage nodes."""
    config = json.loads((REPO / "examples" / "server.json").read_text())
    config["cluster"]["storage_nodes"] = storage_nodes
    (tmp / "server.json").write_text(json.dumps(config))
    r = render(tmp / "server.json", tmp / "out")
    assert r.returncode == 0, r.stderr
    (chart,) = yaml.safe_load_all((tmp / "out/var/lib/rancher/rke2/server/manifests/canarie-longhorn.yaml").read_text())
    return int(chart["spec"]["set"]["persistence.defaultClassReplicaCount"])


def ext4_stat(size_gib: int, tmp: Path) -> tuple[int, int]:
    """(StorageMaximum, StorageAvailable) Longhorn reads (statfs: f_blocks, f_bfree) from
    an empty ext4 of that size, made as the agent makes it (mkfs.ext4 -F -L; the lazy
    init options only skip zeroing, the layout is the same)."""
    image = tmp / "disk.img"
    with open(image, "wb") as f:
        f.truncate(size_gib * GIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "longhorn", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image)], check=True, capture_output=True, timeout=120)
    head = subprocess.run(["dumpe2fs", "-h", str(image)], check=True, capture_output=True, text=True, timeout=60).stdout
    field = {k.strip(): val.strip() for k, _, val in (line.partition(":") for line in head.splitlines()) if val}
    block = int(field["Block size"])
    blocks = int(field["Block count"]) - int(field["Overhead clusters"])
    image.unlink()
    return blocks * block, int(field["Free blocks"]) * block


@dataclass
class Budget:
    disk_gib: int
    storage_nodes: int
    replicas: int
    requested_per_node: int
    schedulable_per_node: int
    settings: dict

    @property
    def headroom(self) -> int:
        return self.schedulable_per_node - self.requested_per_node


def budget(disk_gib: int, storage_nodes: int, replicas: int, claims_: list[Claim], settings: dict, stat: tuple[int, int]) -> Budget:
    maximum, available = stat
    reserved = maximum * settings["storageReservedPercentageForDefaultDisk"] // 100
    # Promised sizes (condition 2) and, with every volume full, real usage (condition 1).
    promised = (maximum - reserved) * settings["storageOverProvisioningPercentage"] // 100
    when_full = available - maximum * settings["storageMinimalAvailablePercentage"] // 100 - 1
    # Each volume has its replicas on different nodes: a node holds at most one replica of
    # each (exactly one of each when there are as many replicas as storage nodes).
    per_node = sum(c.size * c.count for c in claims_)
    return Budget(disk_gib, storage_nodes, replicas, per_node, min(promised, when_full), settings)


@pytest.fixture(scope="module")
def the_budget(tmp_path_factory) -> Budget:
    tmp = tmp_path_factory.mktemp("budget")
    disk_gib = int(tofu_default("data_disk_size_gib"))
    nodes = int(tofu_default("worker_count"))
    return budget(disk_gib, nodes, rendered_replicas(nodes, tmp), claims(), longhorn_settings(), ext4_stat(disk_gib, tmp))


def test_the_budgets_settings_are_set_on_purpose():
    settings = load_yaml(LONGHORN_VALUES)["defaultSettings"]
    for key in LONGHORN_DEFAULTS:
        assert settings.get(key) is not None, f"helm-values/longhorn.yaml must set defaultSettings.{key}: the budget is not an accident"


def test_every_claim_is_a_longhorn_volume():
    assert claims(), "the bundles claim volumes"
    for c in claims():
        assert c.storage_class in (None, "longhorn"), f"{c.where}/{c.name}: storage class {c.storage_class}"
    assert load_yaml(LONGHORN_VALUES)["persistence"]["defaultClass"] is True, "a claim without a class must get Longhorn"


def test_every_storage_key_of_ours_is_a_counted_volume():
    for where, chart, ours, _, _ in chart_sources():
        covers = [p for vol in VOLUMES.get(chart, []) for p in vol.covers]

        def leaves(node, prefix=()):
            if isinstance(node, dict) and node:
                for k, val in node.items():
                    yield from leaves(val, prefix + (str(k),))
            else:
                yield ".".join(prefix)

        for leaf in leaves(ours):
            if STORAGE_WORDS.search(leaf) and leaf not in NOT_VOLUMES:
                assert any(leaf == c or leaf.startswith(c + ".") for c in covers), f"{where}: {leaf} is about storage, but no counted volume covers it"


def test_the_replicas_fit_the_storage_nodes(the_budget):
    assert 1 <= the_budget.replicas <= the_budget.storage_nodes, "Longhorn puts each replica of a volume on its own node"


def test_the_bundles_volumes_fit_every_storage_node(the_budget):
    b = the_budget
    assert b.headroom >= 0, (
        f"each storage node must hold {b.requested_per_node / GIB:.1f} GiB of replicas, but Longhorn schedules at most "
        f"{b.schedulable_per_node / GIB:.1f} GiB on a {b.disk_gib} GiB data disk with {b.settings}"
    )


def test_the_old_settings_and_sizes_did_not_fit(the_budget, tmp_path):
    """The first-day defect: Longhorn's defaults (nothing set) on the default disk."""
    old = budget(the_budget.disk_gib, the_budget.storage_nodes, the_budget.replicas, claims(), LONGHORN_DEFAULTS, ext4_stat(the_budget.disk_gib, tmp_path))
    assert old.headroom < 0


def documented() -> dict:
    text = DOCS.read_text()
    m = re.search(r"<!-- storage-budget -->\s*```yaml\n(.*?)```", text, flags=re.S)
    assert m, "docs/rke2-and-manifests.md lost its storage budget block"
    return yaml.safe_load(m.group(1))


def test_the_docs_state_this_budget(the_budget):
    b = the_budget
    doc = documented()
    assert doc["data_disk_gib"] == b.disk_gib and doc["storage_nodes"] == b.storage_nodes and doc["replicas"] == b.replicas
    assert doc["longhorn"] == b.settings
    assert doc["volumes_gib"] == {f"{c.where}/{c.name}": c.size * c.count / GIB for c in claims()}
    for key, value in (("per_node_gib", b.requested_per_node), ("schedulable_per_node_gib", b.schedulable_per_node), ("headroom_per_node_gib", b.headroom)):
        assert abs(doc[key] - value / GIB) < 0.5, f"{key}: the docs say {doc[key]}, the files give {value / GIB:.1f}"
