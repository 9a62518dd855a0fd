"""In-cluster service addresses (manifests/facts/services.yaml): each is derived from the
bundle that serves it, and every use of an in-cluster address in a values file is one the
table declares, so the Loki URL is written once and checked everywhere it is used."""

from __future__ import annotations

import re

from bundlelib import HELM_VALUES_DIR, fleet_file, helm_options, load_yaml, shipped_bundle_dirs, values_files
from clusterfacts import MISSING, bundle_dir, get_path, services, source_of, workloads

# An in-cluster address: <service>.<namespace>.svc[.cluster.local][:port][/path]
IN_CLUSTER_URL = re.compile(r"\bhttps?://[a-z0-9-]+\.[a-z0-9-]+\.svc(?:\.cluster\.local)?(?::\d+)?[^\s\"'`]*")


def helm_fullname(release: str, chart: str) -> str:
    """Helm's usual fullname template: the release name when it contains the chart name."""
    return release if chart in release else f"{release}-{chart}"


def derived_url(served_by: dict) -> str:
    d = bundle_dir(served_by["bundle"])
    spec = load_yaml(fleet_file(d))
    helm = helm_options(spec)
    (row,) = [r for r in workloads() if workloads()[r]["source"] == {"bundle": served_by["bundle"]}]
    port = get_path(source_of(row).values, served_by["port_value"])
    assert port is not MISSING, f"{served_by['port_value']} is not a value of the {helm['chart']} chart"
    service = helm_fullname(helm["releaseName"], helm["chart"])
    return f"http://{service}.{spec['defaultNamespace']}.svc.cluster.local:{port}"


def test_each_service_url_is_the_one_its_bundle_serves():
    for name, svc in services().items():
        assert svc["url"] == derived_url(svc["served_by"]), name


def values_texts() -> dict[str, str]:
    """Every values file a chart of this cluster reads: the bundles' and the seeds'."""
    out = {}
    for d in shipped_bundle_dirs():
        for path in values_files(d):
            out[f"bundle:{d.name}"] = out.get(f"bundle:{d.name}", "") + path.read_text()
    for path in sorted(HELM_VALUES_DIR.glob("*.yaml")):
        if not path.is_symlink():
            out[f"seed:{path.name}"] = path.read_text()
    return out


def test_every_in_cluster_address_in_a_values_file_is_a_declared_use():
    declared = set()
    for svc in services().values():
        for use in svc["used_by"]:
            declared.add((f"bundle:{use['bundle']}", use["as"].format(url=svc["url"])))
    found = {(where, url) for where, text in values_texts().items() for url in IN_CLUSTER_URL.findall(text)}
    assert found == declared, (
        f"undeclared uses: {sorted(found - declared)}; declared but not found: {sorted(declared - found)}"
    )


def test_the_url_pattern_sees_both_uses():
    texts = values_texts()
    assert IN_CLUSTER_URL.findall(texts["bundle:alloy"]) == ["http://loki.logging.svc.cluster.local:3100/loki/api/v1/push"]
    assert "http://loki.logging.svc.cluster.local:3100" in IN_CLUSTER_URL.findall(texts["bundle:monitoring"])
