"""Raw Kubernetes objects shipped in the Fleet bundles: each validated against its CRD
schema (custom kinds) or the Kubernetes 1.31 schemas (core kinds), then checked for the
behaviour the design promises. See docs/fleet-bundles.md."""

from __future__ import annotations

import functools

import jsonschema
import kubernetes_validate
import pytest

from bundlelib import (
    CUSTOM_KINDS,
    REF,
    crd_header,
    deferred_bundle_dirs,
    gitrepo_path,
    load_json,
    manifest_objects,
    shipped_bundle_dirs,
    strict_schema,
)

KUBERNETES_VERSION = "1.31.0"  # RKE2 v1.31 (reference/rke2)

OBJECTS = [(d, path, obj) for d in shipped_bundle_dirs() + deferred_bundle_dirs() for path, obj in manifest_objects(d)]


def object_id(item):
    bundle_dir, path, obj = item
    return f"{gitrepo_path(bundle_dir)}:{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def objects_of_kind(kind):
    return {obj["metadata"]["name"]: obj for _, _, obj in OBJECTS if obj.get("kind") == kind}


@functools.lru_cache(maxsize=None)
def custom_schema(api_version, kind):
    schema_file, _ = CUSTOM_KINDS[(api_version, kind)]
    schema = load_json(REF / schema_file)
    return jsonschema.Draft7Validator(schema), jsonschema.Draft7Validator(strict_schema(schema))


@pytest.mark.parametrize("item", OBJECTS, ids=[object_id(i) for i in OBJECTS])
def test_object_validates_against_its_schema(item):
    _, path, obj = item
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CUSTOM_KINDS:
        header = crd_header(CUSTOM_KINDS[key][1])
        group, version = key[0].split("/")
        assert (group, key[1]) == (header["group"], header["kind"])
        assert version in header["served"], f"{key[0]} is not served by the pinned CRD"
        if header["scope"] == "Cluster":
            assert "namespace" not in obj["metadata"], "cluster-scoped object with a namespace"
        loose, strict = custom_schema(*key)
        loose.validate(obj)
        strict.validate(obj)  # unknown fields would be pruned silently by the API server
    else:
        # Core kinds; an unknown custom kind raises SchemaNotFoundError here.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_core_validation_rejects_unknown_fields():
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {"a": "b"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_strict_crd_validation_rejects_unknown_fields():
    _, strict = custom_schema("cert-manager.io/v1", "ClusterIssuer")
    with pytest.raises(jsonschema.ValidationError):
        strict.validate({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "x"}, "spec": {"selfSigned": {}, "selfsigned": {}}})


# --- Fleet canary -----------------------------------------------------------------------


def test_fleet_canary_is_a_single_configmap():
    canary = [obj for d, _, obj in OBJECTS if d.name == "fleet-canary"]
    assert [(o["kind"], o["metadata"]["name"]) for o in canary] == [("ConfigMap", "fleet-canary")]


# --- ClusterIssuers ---------------------------------------------------------------------

LE = {
    "letsencrypt-prod": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


def test_three_cluster_issuers():
    issuers = objects_of_kind("ClusterIssuer")
    assert set(issuers) == {"letsencrypt-prod", "letsencrypt-staging", "selfsigned"}
    assert issuers["selfsigned"]["spec"] == {"selfSigned": {}}
    account_keys = set()
    for name, server in LE.items():
        acme = issuers[name]["spec"]["acme"]
        assert set(issuers[name]["spec"]) == {"acme"}
        assert acme["server"] == server
        account_keys.add(acme["privateKeySecretRef"]["name"])
        assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]
    assert len(account_keys) == 2, "prod and staging must not share an ACME account key"


# --- Kyverno policies -------------------------------------------------------------------

INFRA_NAMESPACES = {"kube-system", "longhorn-system", "monitoring", "logging", "trivy-system", "falco"}


def test_four_policies_every_rule_in_audit_mode():
    policies = objects_of_kind("ClusterPolicy")
    assert set(policies) == {"disallow-privileged", "disallow-latest-tag", "require-resource-limits", "disallow-host-path"}
    for name, policy in policies.items():
        spec = policy["spec"]
        # Deprecated spec-level switches must not override the per-rule setting.
        assert "validationFailureAction" not in spec and "validationFailureActionOverrides" not in spec, name
        assert "failurePolicy" not in spec, name
        assert spec["webhookConfiguration"]["failurePolicy"] == "Ignore", name
        assert spec["background"] is True, name
        for rule in spec["rules"]:
            assert rule["validate"]["failureAction"] == "Audit", f"{name}/{rule['name']}"
            assert "failureActionOverrides" not in rule["validate"]
            assert rule["match"] == {"any": [{"resources": {"kinds": ["Pod"]}}]}


def test_require_resource_limits_requires_cpu_and_memory_limits():
    spec = objects_of_kind("ClusterPolicy")["require-resource-limits"]["spec"]
    pattern = spec["rules"][0]["validate"]["pattern"]["spec"]
    for field in ("containers", "=(initContainers)"):
        resources = pattern[field][0]["resources"]
        assert resources == {"requests": {"memory": "?*", "cpu": "?*"}, "limits": {"memory": "?*", "cpu": "?*"}}


def test_only_disallow_host_path_excludes_the_infra_namespaces():
    policies = objects_of_kind("ClusterPolicy")
    (rule,) = policies["disallow-host-path"]["spec"]["rules"]
    (clause,) = rule["exclude"]["any"]
    assert set(rule["exclude"]) == {"any"} and set(clause) == {"resources"} and set(clause["resources"]) == {"namespaces"}
    namespaces = clause["resources"]["namespaces"]
    assert sorted(namespaces) == sorted(INFRA_NAMESPACES)
    for name, policy in policies.items():
        if name != "disallow-host-path":
            assert all("exclude" not in r for r in policy["spec"]["rules"]), name
