"""The per-cluster objects canarie-agent seeds for the Phase 5-7 bundles and the public
endpoints: the cluster values ConfigMap and the Longhorn UI Ingress.

Renders a server config with a DNS zone (and the Longhorn UI login) with the real binary
(target/debug/canarie-agent) and checks the output against the other side of each contract:
the ConfigMap against the example in docs/fleet-bundles.md (which the bundle tests hold the
bundles to), both objects against the Kubernetes schemas of the pinned RKE2, and the Ingress against the
ClusterIssuers, the monitoring bundle's Ingress annotations and the Longhorn HelmChart.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from bundlelib import BUNDLES_DIR, KUBERNETES_VERSION, REF, REPO, load_json, load_yaml, manifest_objects, strict_schema

BIN = REPO / "target" / "debug" / "canarie-agent"
MANIFESTS_DIR = "var/lib/rancher/rke2/server/manifests"
ZONE = "canarie.example.com"  # the zone of the docs' example
MIDDLEWARE_API = "traefik.io/v1alpha1"

from test_bundles_values import cluster_values_example  # noqa: E402  (one parser of the docs)


def render(config: dict, tmp: Path) -> dict[str, list[dict]]:
    assert BIN.is_file(), f"{BIN} is missing: run `cargo build --workspace --bins` first"
    path = tmp / "config.json"
    path.write_text(json.dumps(config))
    out = tmp / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIE_")}
    r = subprocess.run(
        [str(BIN), "render", "--config", str(path), "--out", str(out)], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        for p in sorted((out / MANIFESTS_DIR).glob("*.yaml"))
    }


def server(**cluster) -> dict:
    config = json.loads((REPO / "examples" / "server.json").read_text())
    config["cluster"].update(cluster)
    return config


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> dict[str, list[dict]]:
    config = server(dns_zone=ZONE, name="canarie")
    config["cluster_secrets"] = {"longhorn_ui_auth": {"secret": "longhorn-ui-password"}}
    return render(config, tmp_path_factory.mktemp("public"))


def test_the_configmap_is_the_documented_contract(public):
    (cm,) = public["canarie-cluster-values.yaml"]
    parsed = {key: yaml.safe_load(text) for key, text in cm["data"].items()}
    assert parsed == cluster_values_example()
    assert cm["metadata"] == {"name": "canarie-cluster-values", "namespace": "fleet-local"}


def test_without_a_zone_external_dns_gets_no_values_and_grafana_no_ingress(tmp_path):
    (cm,) = render(server(), tmp_path)["canarie-cluster-values.yaml"]
    assert set(cm["data"]) == {"kube-prometheus-stack.yaml"}, "no zone: external-dns must stay in error"
    assert yaml.safe_load(cm["data"]["kube-prometheus-stack.yaml"]) == {"grafana": {"ingress": {"enabled": False}}}


def test_no_public_longhorn_ui_without_its_login(tmp_path):
    files = render(server(dns_zone=ZONE), tmp_path)
    assert "canarie-longhorn-ui.yaml" not in files


@pytest.mark.parametrize("name", ["canarie-cluster-values.yaml", "canarie-longhorn-ui.yaml"])
def test_objects_validate_against_kubernetes(public, name):
    for obj in public[name]:
        if obj["apiVersion"] == MIDDLEWARE_API:
            schema = load_json(REF / "crds" / "traefik" / "middleware.traefik.io.v1alpha1.schema.json")
            jsonschema.Draft7Validator(strict_schema(schema)).validate(obj)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_longhorn_ui_ingress(public):
    middleware, ing = public["canarie-longhorn-ui.yaml"]
    host = f"longhorn.{ZONE}"
    # Basic auth by a Traefik Middleware beside the agent's htpasswd Secret (its only key).
    assert (middleware["apiVersion"], middleware["kind"]) == (MIDDLEWARE_API, "Middleware")
    assert middleware["metadata"]["namespace"] == ing["metadata"]["namespace"]
    assert middleware["spec"]["basicAuth"]["secret"] == "longhorn-ui-auth"
    annotations = ing["metadata"]["annotations"]
    mw = middleware["metadata"]
    assert annotations["traefik.ingress.kubernetes.io/router.middlewares"] == f"{mw['namespace']}-{mw['name']}@kubernetescrd"
    assert ing["spec"]["ingressClassName"] == "traefik"
    assert [r["host"] for r in ing["spec"]["rules"]] == [host]
    assert ing["spec"]["tls"] == [{"hosts": [host], "secretName": "longhorn-ui-tls"}]
    (path,) = ing["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "longhorn-frontend", "port": {"number": 80}}
    # Next to its auth Secret and the UI's Service: the namespace the Longhorn chart uses.
    (longhorn,) = public["canarie-longhorn.yaml"]
    assert ing["metadata"]["namespace"] == longhorn["spec"]["targetNamespace"]


def test_both_public_endpoints_share_issuer_and_dns_policy(public):
    """Grafana's Ingress comes from the monitoring bundle's values, the Longhorn UI's from
    the agent: the same issuer (one that exists) and external-dns settings for both."""
    _, ing = public["canarie-longhorn-ui.yaml"]
    grafana = load_yaml(BUNDLES_DIR / "monitoring" / "values.yaml")["grafana"]["ingress"]
    shared = {k: v for k, v in ing["metadata"]["annotations"].items() if not k.startswith("traefik.")}
    assert shared == grafana["annotations"]
    assert grafana["ingressClassName"] == ing["spec"]["ingressClassName"]
    issuers = {obj["metadata"]["name"] for _, obj in manifest_objects(BUNDLES_DIR / "cert-manager-issuers")}
    assert shared["cert-manager.io/cluster-issuer"] in issuers
