"""Helm values of the Fleet bundles: schema and key checks against the pinned charts, one
place per value, and the per-cluster values contract. See docs/fleet-bundles.md."""

from __future__ import annotations

import os
import re

import jsonschema
import pytest
import yaml

from bundlelib import (
    CLUSTER_VALUES_CONFIGMAP,
    CLUSTER_VALUES_NAMESPACE,
    DOCS,
    HELM_VALUES_DIR,
    REPO,
    chart_defaults,
    chart_values_schema,
    deep_merge,
    deferred_bundle_dirs,
    fleet_file,
    gitrepo_path,
    helm_options,
    leaf_paths,
    load_yaml,
    shipped_bundle_dirs,
    values_files,
)

ALL_BUNDLES = shipped_bundle_dirs() + deferred_bundle_dirs()
HELM_BUNDLES = [d for d in ALL_BUNDLES if helm_options(load_yaml(fleet_file(d)) or {})]


def ids(dirs):
    return [gitrepo_path(d) for d in dirs]


def helm_of(bundle_dir):
    return helm_options(load_yaml(fleet_file(bundle_dir)) or {})


def values_of(bundle_dir) -> dict:
    out = {}
    for path in values_files(bundle_dir):
        out = deep_merge(out, load_yaml(path) or {})
    return out


# Keys that are documented in the pinned values.yaml only as comments (so they are not in
# the parsed defaults), each with the line that documents it.
COMMENTED_KEYS = {
    "kube-prometheus-stack": {
        # grafana-12.11.1.values.yaml l.492 "# storageClassName: default"
        ("grafana", "persistence", "storageClassName"),
        # grafana-12.11.1.values.yaml l.306 "# ingressClassName: nginx"
        ("grafana", "ingress", "ingressClassName"),
        # grafana-12.11.1.values.yaml l.974-976 "# server: ... #    root_url:" (grafana.ini)
        ("grafana", "grafana.ini", "server", "root_url"),
    },
}

# Pass-through maps whose defaults are not empty, so the automatic rule below (an empty
# or null default marks a free-form map) does not cover them.
FREE_FORM = {
    # Loki configuration blocks rendered verbatim into Loki's config; the schema declares
    # them additionalProperties: true.
    "loki": {("loki", "limits_config")},
}


# Keys whose value is a Kubernetes ResourceRequirements handed to a container verbatim,
# whatever the chart's default happens to list (kyverno's defaults set no CPU limit).
FREE_FORM_KEY_NAMES = {"resources"}


def unknown_keys(chart: str, values: dict) -> list[str]:
    """Key paths of `values` that the pinned chart does not define. Below a key whose
    default is {} or null (storageSpec, securityContext...) anything goes: those are
    free-form maps handed to Kubernetes objects; lists are leaves."""
    defaults = chart_defaults(chart)
    commented = COMMENTED_KEYS.get(chart, set())
    free = FREE_FORM.get(chart, set())
    problems = []

    def walk(ours, theirs, path):
        for key, value in ours.items():
            here = path + (key,)
            if here in commented or here in free:
                continue
            if not isinstance(theirs, dict) or key not in theirs:
                problems.append(".".join(here))
                continue
            default = theirs[key]
            if key in FREE_FORM_KEY_NAMES:
                continue
            if isinstance(value, dict) and isinstance(default, dict) and default:
                walk(value, default, here)

    walk(values, defaults, ())
    return problems


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_values_only_use_keys_of_the_pinned_chart(bundle_dir):
    chart = helm_of(bundle_dir)["chart"]
    assert unknown_keys(chart, values_of(bundle_dir)) == []


def test_key_check_catches_a_misspelt_key():
    assert unknown_keys("kube-prometheus-stack", {"prometheus": {"prometheusSpec": {"retentionSise": "1GiB"}}}) == [
        "prometheus.prometheusSpec.retentionSise"
    ]
    assert unknown_keys("alloy", {"alloy": {"resources": {"limits": {"cpu": "1"}}}}) == []


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_values_validate_against_the_chart_schema(bundle_dir):
    """Helm validates the coalesced values (chart defaults + ours + the cluster values)
    against values.schema.json when the chart ships one."""
    chart = helm_of(bundle_dir)["chart"]
    schema = chart_values_schema(chart)
    if schema is None:
        pytest.skip(f"{chart} ships no values.schema.json; covered by the key check")
    merged = deep_merge(chart_defaults(chart), values_of(bundle_dir))
    for key in cluster_values_keys(bundle_dir):
        merged = deep_merge(merged, cluster_values_example()[key])
    jsonschema.Draft7Validator(schema).validate(merged)


def test_cert_manager_schema_rejects_unknown_keys():
    """The cert-manager schema is strict (additionalProperties: false everywhere), so the
    schema test above is a real guard for that chart."""
    schema = chart_values_schema("cert-manager")
    merged = deep_merge(chart_defaults("cert-manager"), {"crds": {"enable": True}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(merged)


# --- Each value in one place ------------------------------------------------------------


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_fleet_yaml_carries_no_inline_values(bundle_dir):
    helm = helm_of(bundle_dir)
    assert not helm.get("values"), "values belong in the values file, not in fleet.yaml helm.values"
    assert not helm.get("templateValues")
    assert helm.get("valuesFiles") == ["values.yaml"]


def release_of(bundle_dir) -> str:
    return helm_of(bundle_dir)["releaseName"]


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_helm_values_entry_is_a_link_to_the_bundle_values_file(bundle_dir):
    """helm-values/<release>.yaml is the name people look for; it is a symbolic link to the
    one real file, which lives inside the bundle directory because Fleet reads values
    files relative to the bundle (docs/fleet-bundles.md, "Values files")."""
    entry = HELM_VALUES_DIR / f"{release_of(bundle_dir)}.yaml"
    assert entry.is_symlink(), f"{entry.relative_to(REPO)} must be a symlink, not a copy"
    target = os.readlink(entry)
    assert not os.path.isabs(target), "relative links survive a clone anywhere"
    assert entry.resolve() == (bundle_dir / "values.yaml").resolve()


def test_every_values_file_is_linked_exactly_once():
    real = {(d / "values.yaml").resolve() for d in HELM_BUNDLES}
    links = [p for p in HELM_VALUES_DIR.iterdir() if p.is_symlink()]
    targets = [p.resolve() for p in links]
    assert sorted(map(str, targets)) == sorted(map(str, real)), "one helm-values link per bundle values file"
    # And no regular file under helm-values/ duplicates a Phase 5-7 release.
    releases = {release_of(d) for d in HELM_BUNDLES}
    for path in HELM_VALUES_DIR.iterdir():
        if path.stem in releases:
            assert path.is_symlink()


def test_releases_of_the_same_chart_share_no_setting():
    """kube-prometheus-stack runs as two releases (CRDs, stack); a setting that both need
    would be defined twice. Same key with a different value is fine (they differ on
    purpose, e.g. crds.enabled)."""
    by_chart = {}
    for bundle_dir in HELM_BUNDLES:
        by_chart.setdefault(helm_of(bundle_dir)["chart"], []).append(bundle_dir)
    for chart, dirs in by_chart.items():
        seen = {}
        for bundle_dir in dirs:
            for path, value in leaf_paths(values_of(bundle_dir)):
                key = (path, yaml.safe_dump(value))
                assert key not in seen, f"{chart}: {'.'.join(path)} set identically in {seen[key]} and {gitrepo_path(bundle_dir)}"
                seen[key] = gitrepo_path(bundle_dir)


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_values_contain_no_template_delimiters(bundle_dir):
    """Fleet runs helm values through Go templates with ${ } delimiters before Helm sees
    them, and several charts pass strings through tpl: a stray ${ or {{ would be
    evaluated, not shipped."""
    for path in values_files(bundle_dir):
        text = path.read_text()
        assert "${" not in text, f"{path.relative_to(REPO)}: '${{' is Fleet template syntax"
        assert "{{" not in text, f"{path.relative_to(REPO)}: '{{{{' is Helm template syntax"


# --- Cluster values contract ------------------------------------------------------------


def cluster_values_keys(bundle_dir) -> list[str]:
    keys = []
    for ref in helm_of(bundle_dir).get("valuesFrom") or []:
        assert "secretKeyRef" not in ref, "cluster values are not secret; secrets are mounted, not templated"
        cm = ref["configMapKeyRef"]
        assert cm["name"] == CLUSTER_VALUES_CONFIGMAP
        # Explicit: without it the fleet-agent looks in the release namespace.
        assert cm["namespace"] == CLUSTER_VALUES_NAMESPACE
        keys.append(cm["key"])
    return keys


def cluster_values_example() -> dict:
    """The example ConfigMap in docs/fleet-bundles.md (the block after the
    <!-- cluster-values-example --> marker): key -> parsed values."""
    text = DOCS.read_text()
    match = re.search(r"<!-- cluster-values-example -->\s*```yaml\n(.*?)```", text, flags=re.S)
    assert match, "docs/fleet-bundles.md lost its cluster values example"
    cm = yaml.safe_load(match.group(1))
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"] == {"name": CLUSTER_VALUES_CONFIGMAP, "namespace": CLUSTER_VALUES_NAMESPACE}
    return {key: yaml.safe_load(value) for key, value in cm["data"].items()}


def test_cluster_values_contract_matches_the_docs():
    used = {key for d in HELM_BUNDLES for key in cluster_values_keys(d)}
    assert used == set(cluster_values_example()), "docs/fleet-bundles.md must document exactly the keys the bundles read"
    assert used == {"external-dns.yaml", "kube-prometheus-stack.yaml"}


@pytest.mark.parametrize("bundle_dir", HELM_BUNDLES, ids=ids(HELM_BUNDLES))
def test_cluster_values_are_valid_and_not_also_in_the_values_file(bundle_dir):
    chart = helm_of(bundle_dir)["chart"]
    ours = {path for path, _ in leaf_paths(values_of(bundle_dir))}
    for key in cluster_values_keys(bundle_dir):
        example = cluster_values_example()[key]
        assert unknown_keys(chart, example) == []
        for path, _ in leaf_paths(example):
            assert path not in ours, f"{'.'.join(path)} is per cluster; it must not also be in {gitrepo_path(bundle_dir)}/values.yaml"


def test_external_dns_needs_its_domain_filter_from_the_cluster():
    example = cluster_values_example()["external-dns.yaml"]
    assert set(example) == {"domainFilters", "txtOwnerId"}
    assert example["domainFilters"] and all(isinstance(d, str) for d in example["domainFilters"])


def test_grafana_host_and_certificate_come_from_the_cluster():
    """Grafana's Ingress is switched on, named and given its certificate per cluster; the
    values file holds only what every cluster shares (class, issuer, path)."""
    grafana = cluster_values_example()["kube-prometheus-stack.yaml"]["grafana"]
    ingress = grafana["ingress"]
    assert ingress["enabled"] is True
    (host,) = ingress["hosts"]
    assert ingress["tls"] == [{"secretName": "grafana-tls", "hosts": [host]}]
    assert grafana["grafana.ini"]["server"]["root_url"] == f"https://{host}/"
    shared = values_of(next(d for d in HELM_BUNDLES if d.name == "monitoring"))["grafana"]["ingress"]
    assert shared["ingressClassName"] == "traefik"
    assert shared["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
