"""Raw Kubernetes objects shipped in the Fleet bundles: each validated against its CRD
schema (custom kinds) or the schemas of the Kubernetes minor RKE2 runs (core kinds), then checked for the
behaviour the design promises. See docs/fleet-bundles.md."""

from __future__ import annotations

import functools

import jsonschema
import kubernetes_validate
import pytest

from bundlelib import (
    CUSTOM_KINDS,
    KUBERNETES_VERSION,
    REF,
    crd_header,
    deferred_bundle_dirs,
    gitrepo_path,
    load_json,
    manifest_objects,
    shipped_bundle_dirs,
    strict_schema,
)


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
        assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "traefik"}}}]
    assert len(account_keys) == 2, "prod and staging must not share an ACME account key"


# --- Kyverno policies -------------------------------------------------------------------

POD_RULES = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]


def test_four_policies_report_only():
    """ValidatingPolicy (policies.kyverno.io/v1) replaces ClusterPolicy, deprecated since
    Kyverno 1.17: the same four checks, reporting violations and blocking nothing."""
    assert not objects_of_kind("ClusterPolicy"), "ClusterPolicy is removed in Kyverno 1.20"
    policies = objects_of_kind("ValidatingPolicy")
    assert set(policies) == {"disallow-privileged", "disallow-latest-tag", "require-resource-limits", "disallow-host-path"}
    for name, policy in policies.items():
        assert policy["apiVersion"] == "policies.kyverno.io/v1", name
        spec = policy["spec"]
        assert spec["validationActions"] == ["Audit"], name
        # A Kyverno outage or a CEL error never blocks a Pod.
        assert spec["failurePolicy"] == "Ignore", name
        assert spec["evaluation"]["background"]["enabled"] is True, name
        assert spec.get("evaluation", {}).get("admission", {}).get("enabled", True) is True, name
        assert spec["matchConstraints"]["resourceRules"] == POD_RULES, name
        # Autogen (Deployments, DaemonSets... checked too) stays at its default: all controllers.
        assert "autogen" not in spec, name
        assert spec["validations"] and all(v["expression"] and v["message"] for v in spec["validations"]), name


def expressions(name) -> str:
    spec = objects_of_kind("ValidatingPolicy")[name]["spec"]
    variables = {v["name"]: v["expression"] for v in spec.get("variables") or []}
    return " ".join(variables.values()) + " " + " ".join(v["expression"] for v in spec["validations"])


def test_require_resource_limits_requires_cpu_and_memory_requests_and_limits():
    text = " ".join(expressions("require-resource-limits").split())
    for field in ("requests.?cpu", "requests.?memory", "limits.?cpu", "limits.?memory"):
        assert f"c.?resources.?{field}.orValue('') != ''" in text, field
    assert "object.spec.containers + object.spec.?initContainers.orValue([])" in text
    # The API rejects resources on ephemeral containers: `kubectl debug` would always be reported.
    assert "ephemeralContainers" not in text


def test_container_checks_cover_init_and_ephemeral_containers():
    for name in ("disallow-privileged", "disallow-latest-tag"):
        text = " ".join(expressions(name).split())
        assert "object.spec.?initContainers.orValue([])" in text and "object.spec.?ephemeralContainers.orValue([])" in text, name
        assert "variables.allContainers.all(" in text, name


def test_only_disallow_host_path_excludes_the_infra_namespaces():
    policies = objects_of_kind("ValidatingPolicy")
    selector = policies["disallow-host-path"]["spec"]["matchConstraints"]["namespaceSelector"]
    (clause,) = selector["matchExpressions"]
    assert set(selector) == {"matchExpressions"}
    assert (clause["key"], clause["operator"]) == ("kubernetes.io/metadata.name", "NotIn")
    # Which namespaces: test_namespaces.py holds them to manifests/facts/.
    assert clause["values"]
    for name, policy in policies.items():
        constraints = policy["spec"]["matchConstraints"]
        assert set(constraints) == ({"namespaceSelector", "resourceRules"} if name == "disallow-host-path" else {"resourceRules"}), name
        assert "matchConditions" not in policy["spec"], name
