"""Fleet bundles (manifests/bundles): layout, fleet.yaml schema, bundle names and
dependsOn, chart pins and lifecycle, bundle size. See docs/fleet-bundles.md."""

from __future__ import annotations

import re

import jsonschema
import pytest

from bundlelib import (
    BUNDLES_DIR,
    DEFERRED_DIR,
    DOCS,
    FLEET_FILE_NAMES,
    GITREPO_NAME,
    MAX_HELM_RELEASE_NAME,
    REPO,
    bundle_name,
    chart_pin,
    deferred_bundle_dirs,
    fleet_file,
    fleet_yaml_schema,
    gitrepo_path,
    gzip_size,
    helm_options,
    leaf_paths,
    lifecycle_facts,
    load_yaml,
    pinned_charts,
    resource_files,
    shipped_bundle_dirs,
    strict_schema,
    values_files,
)

SHIPPED = shipped_bundle_dirs()
DEFERRED = deferred_bundle_dirs()
ALL_BUNDLES = SHIPPED + DEFERRED


def ids(dirs):
    return [gitrepo_path(d) for d in dirs]


def spec_of(bundle_dir):
    return load_yaml(fleet_file(bundle_dir)) or {}


# --- Layout: what ships is exactly the directories with a fleet.yaml --------------------


def test_expected_bundles_ship_and_falco_is_deferred():
    shipped = {d.name for d in SHIPPED}
    assert shipped == {
        "fleet-canary",
        "monitoring-crds",
        "monitoring",
        "loki",
        "alloy",
        "cert-manager",
        "cert-manager-issuers",
        "external-dns",
        "trivy-operator",
        "kyverno",
        "kyverno-policies",
    }
    assert [d.name for d in DEFERRED] == ["falco"]
    assert not any("falco" in gitrepo_path(d) for d in SHIPPED)


def test_every_bundles_entry_is_a_bundle_directory_one_level_deep():
    """canarie-agent turns every manifests/bundles/<dir> with a fleet.yaml into a GitRepo
    path. A stray file or a directory without fleet.yaml would be silently ignored, and a
    nested fleet.yaml would become a second bundle inside the first (Fleet walks each
    path recursively)."""
    for entry in BUNDLES_DIR.iterdir():
        assert entry.is_dir(), f"{entry.relative_to(REPO)}: only bundle directories belong in manifests/bundles"
        assert fleet_file(entry), f"{entry.relative_to(REPO)}: a bundle directory needs a fleet.yaml"
        for sub in entry.rglob("*"):
            assert sub.name not in FLEET_FILE_NAMES or sub.parent == entry, (
                f"{sub.relative_to(REPO)}: nested fleet.yaml would be a separate bundle; keep bundles one level deep"
            )


def test_no_fleet_yaml_elsewhere_under_manifests():
    """Only manifests/bundles/<name>/ ships and only manifests/deferred/<name>/ is parked;
    a fleet.yaml anywhere else under manifests/ (seed/, tests/) is a mistake. (The Fleet
    chart's own values file, helm-values/fleet.yaml, is not a bundle.)"""
    allowed = {fleet_file(d) for d in ALL_BUNDLES}
    for name in FLEET_FILE_NAMES:
        for path in (REPO / "manifests").rglob(name):
            assert path in allowed, f"{path.relative_to(REPO)}: fleet.yaml outside manifests/bundles/<name>/ or manifests/deferred/<name>/"


def test_deferred_bundles_are_not_under_the_shipped_tree():
    assert DEFERRED_DIR.resolve() not in BUNDLES_DIR.resolve().parents
    assert BUNDLES_DIR.resolve() not in DEFERRED_DIR.resolve().parents


# --- fleet.yaml -------------------------------------------------------------------------


@pytest.mark.parametrize("bundle_dir", ALL_BUNDLES, ids=ids(ALL_BUNDLES))
def test_fleet_yaml_validates_against_schema(bundle_dir):
    spec = spec_of(bundle_dir)
    jsonschema.Draft7Validator(fleet_yaml_schema()).validate(spec)
    # The derived schema accepts unknown keys (Fleet ignores them silently); reject them.
    jsonschema.Draft7Validator(strict_schema(fleet_yaml_schema())).validate(spec)


def test_strict_schema_rejects_a_misspelt_fleet_yaml_key():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(strict_schema(fleet_yaml_schema())).validate({"helm": {"valueFiles": ["values.yaml"]}})


@pytest.mark.parametrize("bundle_dir", ALL_BUNDLES, ids=ids(ALL_BUNDLES))
def test_fleet_yaml_has_no_cluster_targeting_or_namespace_lock(bundle_dir):
    """All bundles go to the local cluster through the GitRepo's default target; `namespace`
    would force every resource into one namespace and break cluster-scoped objects."""
    spec = spec_of(bundle_dir)
    for key in ("namespace", "targets", "targetCustomizations", "overrideTargets", "targetRestrictions", "name"):
        assert key not in spec, f"{gitrepo_path(bundle_dir)}: unexpected `{key}`"


# --- Bundle names and dependsOn ---------------------------------------------------------

NAMES = {bundle_name(d): d for d in SHIPPED}


def test_bundle_names_are_unique_and_never_shortened():
    """Fleet hashes names over 53 characters; keep every name readable and predictable."""
    assert len(NAMES) == len(SHIPPED)
    for name, bundle_dir in NAMES.items():
        assert len(name) <= MAX_HELM_RELEASE_NAME
        assert name == f"{GITREPO_NAME}-" + gitrepo_path(bundle_dir).replace("/", "-")


def test_naming_rule_matches_the_fleet_docs_example():
    from bundlelib import helm_release_name

    assert helm_release_name("one/multi-cluster/hello-world") == "one-multi-cluster-hello-world"
    assert (
        helm_release_name("opni-fleet-examples/fleets/opni-ui-plugin-operator-crd")
        == "opni-fleet-examples-fleets-opni-ui-plugin-opera-021f7"
    )
    assert bundle_name(BUNDLES_DIR / "loki") == "canarie-manifests-bundles-loki"


@pytest.mark.parametrize("bundle_dir", SHIPPED, ids=ids(SHIPPED))
def test_depends_on_names_resolve_to_shipped_bundles(bundle_dir):
    for dep in spec_of(bundle_dir).get("dependsOn") or []:
        assert "selector" not in dep, "dependsOn by label selector is not used here; name the bundle"
        assert dep["name"] in NAMES, (
            f"{gitrepo_path(bundle_dir)}: dependsOn {dep['name']!r} is not a bundle of GitRepo canarie; "
            f"known: {sorted(NAMES)}"
        )
        assert NAMES[dep["name"]] != bundle_dir, "a bundle cannot depend on itself"


def dependencies():
    return {bundle_name(d): {dep["name"] for dep in spec_of(d).get("dependsOn") or []} for d in SHIPPED}


def test_dependency_graph_is_acyclic():
    graph, done, visiting = dependencies(), set(), set()

    def visit(node, trail):
        assert node not in visiting, f"dependsOn cycle: {' -> '.join(trail + [node])}"
        if node in done:
            return
        visiting.add(node)
        for dep in graph.get(node, ()):
            visit(dep, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


def _name(dirname):
    return bundle_name(BUNDLES_DIR / dirname)


def test_crds_come_before_their_objects():
    graph = dependencies()
    assert _name("cert-manager") in graph[_name("cert-manager-issuers")]
    assert _name("kyverno") in graph[_name("kyverno-policies")]
    assert _name("monitoring-crds") in graph[_name("monitoring")]


def _enables_prometheus_operator_objects(values) -> bool:
    for path, value in leaf_paths(values):
        joined = ".".join(str(p) for p in path).lower()
        if value is True and re.search(r"(servicemonitor|podmonitor|prometheusrule)[^.]*\.enabled$", joined):
            return True
    return False


@pytest.mark.parametrize("bundle_dir", SHIPPED, ids=ids(SHIPPED))
def test_bundles_creating_monitoring_objects_depend_on_the_crd_bundle(bundle_dir):
    """A ServiceMonitor (monitoring.coreos.com) can only be created once the Prometheus
    Operator CRDs exist; without the dependency the first deployment fails."""
    values = {}
    for path in values_files(bundle_dir):
        values.update(load_yaml(path) or {})
    if bundle_dir.name in ("monitoring", "monitoring-crds") or not _enables_prometheus_operator_objects(values):
        return
    assert _name("monitoring-crds") in dependencies()[bundle_name(bundle_dir)]


# --- Chart pins and lifecycle -----------------------------------------------------------

HELM_BUNDLES = [d for d in ALL_BUNDLES if helm_options(spec_of(d))]


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_chart_matches_the_pinned_version(bundle_dir):
    helm = helm_options(spec_of(bundle_dir))
    shipped = bundle_dir in SHIPPED
    assert helm["chart"] in pinned_charts() or not shipped, f"{helm['chart']} is not in lifecycle/pinned-charts.yaml"
    pin = chart_pin(helm["chart"])
    assert helm["repo"] == pin["repo"].split()[0]
    assert str(helm["version"]) == str(pin["version"]), "versions are exact pins, never ranges"


def test_no_component_at_end_of_life():
    facts = lifecycle_facts()
    eol = {name for name, fact in facts.items() if "end of life" in str(fact.get("status", ""))}
    assert "promtail" in eol  # the fact this check exists for
    deprecated_charts = {"loki-stack", "promtail"}
    for bundle_dir in HELM_BUNDLES:
        chart = helm_options(spec_of(bundle_dir))["chart"]
        assert chart not in eol | deprecated_charts, f"{gitrepo_path(bundle_dir)} ships {chart}, which is end of life"
        # The grafana/helm-charts Loki chart is maintained for GEL only since 2026-03-16.
        if chart == "loki":
            assert helm_options(spec_of(bundle_dir))["repo"] == "https://grafana-community.github.io/helm-charts"
    raw = "\n".join(p.read_text() for d in SHIPPED for p in resource_files(d))
    assert "promtail" not in raw.lower()


def test_retired_components_are_documented():
    """Promtail and ingress-nginx were replaced because upstream retired them; docs say so
    where operators read (no pinned line may be past its end of life: test_lifecycle.py)."""
    facts = lifecycle_facts()
    assert "retired" in facts["ingress-nginx"]["status"]
    docs = DOCS.read_text()
    assert "Promtail" in docs and "2026-03-02" in docs and "Alloy" in docs
    assert "ClusterPolicy" in docs and "ValidatingPolicy" in docs
    rke2_docs = (REPO / "docs" / "rke2-and-manifests.md").read_text()
    assert "ingress-nginx" in rke2_docs and "Traefik" in rke2_docs and "retire" in rke2_docs


# --- Bundle size ------------------------------------------------------------------------

FLEET_LIMIT_BYTES = 1_000_000

# Compressed size of the pinned chart archives, which are not available offline. Only
# kube-prometheus-stack has a measured figure (charts/kube-prometheus-stack/SOURCE.txt:
# the chart directory without its three remote sub-charts tar+gzips to ~0.82 MB). The
# sub-charts (grafana, kube-state-metrics, prometheus-node-exporter, windows-exporter)
# are budgeted at 0.12 MB together. The others are not computable here.
CHART_GZ_ESTIMATE = {"kube-prometheus-stack": 820_000 + 120_000}


def local_bundle_bytes(bundle_dir) -> bytes:
    files = [fleet_file(bundle_dir), *values_files(bundle_dir), *resource_files(bundle_dir)]
    return b"".join(p.read_bytes() for p in files)


@pytest.mark.parametrize("bundle_dir", SHIPPED, ids=ids(SHIPPED))
def test_bundle_size_estimate_is_under_the_fleet_limit(bundle_dir):
    local = gzip_size(local_bundle_bytes(bundle_dir))
    assert local < 50_000, f"{gitrepo_path(bundle_dir)}: {local} bytes of local files (gzip) is suspicious"
    helm = helm_options(spec_of(bundle_dir))
    if not helm:
        return
    estimate = CHART_GZ_ESTIMATE.get(helm["chart"])
    if estimate is None:
        pytest.skip(f"{helm['chart']} {helm['version']}: chart archive not available offline; size not computable")
    total = estimate + local
    assert total < FLEET_LIMIT_BYTES, f"{gitrepo_path(bundle_dir)}: ~{total} bytes gzip, limit {FLEET_LIMIT_BYTES}"
