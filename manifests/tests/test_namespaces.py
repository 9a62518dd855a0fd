"""The namespace table (manifests/facts/namespaces.yaml) against every file that repeats one
of its facts: the Pod Security Admission exemptions the agent writes, Kyverno's
disallow-host-path exclusions, where the bundles and the seeded charts install, and the
namespaces of everything `canarie-agent render` writes."""

from __future__ import annotations

import pytest
import yaml

from bundlelib import BUNDLES_DIR, DEFERRED_DIR, REPO, fleet_file, load_yaml
from clusterfacts import (
    LEVELS,
    SEED_DIR,
    is_shipped_bundle,
    kyverno_host_path_exclusions,
    namespaces,
    psa_exemptions,
    seed_doc,
    seed_namespace,
    source_of,
    workloads,
)
from test_seed_manifests import render


def shipped(ns: str) -> bool:
    """A namespace ships when it holds anything but deferred bundles."""
    holds = namespaces()[ns]["holds"]
    return not holds or any(not h.startswith("bundle:") or is_shipped_bundle(h.split(":", 1)[1]) for h in holds)


def expected_exemptions(table: dict | None = None) -> set[str]:
    table = table or namespaces()
    return {ns for ns, row in table.items() if row["pod_security"] == "privileged" and shipped(ns)}


def host_path_namespaces() -> set[str]:
    """Shipped namespaces where a workload of host-access.yaml needs hostPath."""
    out = set()
    for name, row in workloads().items():
        src = source_of(name)
        if src.shipped and "hostPath" in row["needs"]:
            out.add(src.namespace)
    return out


def test_the_table_is_well_formed():
    for ns, row in namespaces().items():
        assert row["pod_security"] in LEVELS, ns
        reasons = {"why", "precaution"} & set(row)
        assert len(reasons) == 1, f"{ns}: give exactly one of why (needed) or precaution (not needed, stated why)"
        assert row["pod_security"] == "privileged" or "precaution" not in row, f"{ns}: a precaution is an exemption"
        assert set(row) <= {"pod_security", "why", "precaution", "holds"}, ns
        assert isinstance(row["holds"], list), ns


def test_psa_exempts_exactly_the_privileged_namespaces_that_ship():
    exempt = psa_exemptions()
    assert len(exempt) == len(set(exempt)), "an exemption listed twice"
    expected = expected_exemptions()
    assert set(exempt) == expected, (
        f"agent/src/rke2/pod-security-admission.yaml exempts {sorted(set(exempt) - expected)} that the table does not "
        f"mark privileged, and misses {sorted(expected - set(exempt))} that it does (their pods would be refused)"
    )


def test_a_privileged_namespace_missing_from_psa_is_caught():
    """The check above on the files as they were: `logging` privileged in the table (Alloy
    mounts /var/log) but not exempted."""
    exempt = set(psa_exemptions()) - {"logging"}
    assert expected_exemptions() - exempt == {"logging"}


def test_kyverno_host_path_exclusions_are_the_namespaces_whose_workloads_need_host_paths():
    excluded = kyverno_host_path_exclusions()
    assert len(excluded) == len(set(excluded))
    assert set(excluded) == host_path_namespaces()


def test_every_host_path_namespace_is_exempt_from_psa():
    """Kyverno reporting hostPath there is moot if Pod Security refuses the pod first: the
    two lists disagreed about `logging`."""
    assert host_path_namespaces() <= set(psa_exemptions())


def derived_holds() -> dict[str, set[str]]:
    """namespace -> bundle:<dir> / seed:<file> entries, read from the files."""
    out: dict[str, set[str]] = {}
    for base in (BUNDLES_DIR, DEFERRED_DIR):
        for d in sorted(base.iterdir()):
            spec = load_yaml(fleet_file(d)) if d.is_dir() and fleet_file(d) else None
            if spec is not None and (spec or {}).get("defaultNamespace"):
                out.setdefault(spec["defaultNamespace"], set()).add(f"bundle:{d.name}")
    for path in sorted(SEED_DIR.glob("*.yaml")):
        ns = seed_namespace(path.name)
        if ns is not None:
            out.setdefault(ns, set()).add(f"seed:{path.name}")
    return out


def test_holds_lists_exactly_the_bundles_and_seeds_of_each_namespace():
    derived = derived_holds()
    assert set(derived) <= set(namespaces()), f"namespaces missing from the table: {sorted(set(derived) - set(namespaces()))}"
    for ns, row in namespaces().items():
        typed = {h for h in row["holds"] if ":" in h}
        assert typed == derived.get(ns, set()), f"{ns}: holds says {sorted(typed)}, the files say {sorted(derived.get(ns, set()))}"


def test_cluster_scoped_bundles_have_no_namespace_to_list():
    for d in sorted(BUNDLES_DIR.iterdir()):
        spec = load_yaml(fleet_file(d)) or {}
        if not spec.get("defaultNamespace"):
            assert not spec.get("helm"), f"{d.name}: a Helm bundle needs a defaultNamespace (and a row in namespaces.yaml)"


def test_cluster_scoped_seeds_are_no_charts():
    """A seed without a namespace has no row to list it: only a cluster-scoped object (no
    HelmChart, whose workload always runs in a namespace) may be one."""
    for path in sorted(SEED_DIR.glob("*.yaml")):
        if seed_namespace(path.name) is None:
            assert seed_doc(path.name)["kind"] not in ("HelmChart", "HelmChartConfig"), path.name


def test_no_bundle_sets_pod_security_labels():
    """Pod Security is decided in one place (the table, applied by the cluster-wide
    AdmissionConfiguration). Fleet would apply namespaceLabels only after the release's
    pods exist, and the agent creates `monitoring` and `external-dns` itself."""
    for base in (BUNDLES_DIR, DEFERRED_DIR):
        for d in sorted(p for p in base.iterdir() if p.is_dir() and fleet_file(p)):
            labels = (load_yaml(fleet_file(d)) or {}).get("namespaceLabels") or {}
            assert not [k for k in labels if k.startswith("pod-security.kubernetes.io/")], d.name


@pytest.fixture(scope="module")
def rendered_server(tmp_path_factory) -> list[dict]:
    """Every object `canarie-agent render` writes for the fullest example server."""
    out = tmp_path_factory.mktemp("render") / "out"
    r = render(REPO / "examples" / "server-with-secrets.json", out)
    assert r.returncode == 0, r.stderr
    docs = []
    for path in sorted((out / "var/lib/rancher/rke2/server/manifests").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_everything_the_agent_renders_lands_in_a_listed_namespace(rendered_server):
    table = namespaces()
    for doc in rendered_server:
        for ns in (doc["metadata"].get("namespace"), (doc.get("spec") or {}).get("targetNamespace")):
            assert ns is None or ns in table, f"{doc['kind']}/{doc['metadata']['name']}: namespace {ns} is not in namespaces.yaml"

