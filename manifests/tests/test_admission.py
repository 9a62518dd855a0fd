"""Admission, seen for the whole cluster: what every workload of RKE2, the seeded charts and
the Fleet bundles needs from the host (manifests/facts/host-access.yaml), checked against
the chart values that turn it on, and against the Pod Security level of its namespace
(manifests/facts/namespaces.yaml). Charts are not rendered (their templates are not in
reference/): the values are the pinned chart's defaults with ours merged over them, and
what a chart's templates always do is declared in the table with its reason."""

from __future__ import annotations

import copy

import pytest

from bundlelib import deep_merge
from clusterfacts import (
    ADMITS,
    KINDS,
    admission_problems,
    guarded_leaves,
    host_related_paths,
    namespaces,
    needs_problems,
    rows_by_values_source,
    source_of,
    stray_switch_problems,
    switches_of_chart,
    workloads,
)

ROWS = sorted(workloads())
SOURCES = sorted(rows_by_values_source())


def test_every_row_is_complete():
    for name, row in workloads().items():
        assert set(row) <= {"what", "source", "needs", "why", "switches", "reviewed"}, name
        assert row["what"] and len(row["source"]) == 1, name
        assert set(row["needs"]) <= KINDS, f"{name}: unknown kinds {set(row['needs']) - KINDS}"
        fixed = set(row["needs"]) - {k for kinds in (row.get("switches") or {}).values() for k in kinds}
        assert not fixed or row.get("why"), f"{name}: needs {sorted(fixed)} come from no value; say why in `why`"
        for path, kinds in (row.get("switches") or {}).items():
            assert kinds and set(kinds) <= KINDS, f"{name}: switch {path}"


@pytest.mark.parametrize("row", ROWS)
def test_each_workload_needs_exactly_what_its_values_turn_on(row):
    src = source_of(row)
    for path in workloads()[row].get("switches") or {}:
        assert src.values is not None, f"{row}: {src.label} has no chart values for switch {path}"
    assert needs_problems(row) == []


@pytest.mark.parametrize("source", SOURCES)
def test_no_other_switch_of_the_chart_is_on(source):
    assert stray_switch_problems(source) == []


@pytest.mark.parametrize("source", SOURCES)
def test_every_host_related_value_of_the_pinned_chart_is_a_switch(source):
    """A chart bump that brings a new way to give pods host access, or a value of ours
    that uses one, must be reviewed into the table."""
    src = source_of(rows_by_values_source()[source][0])
    found = host_related_paths(src.values or {})
    declared = set(switches_of_chart(src.chart))
    assert found <= declared, f"{src.label}: host-related values no row declares as a switch: {sorted(found - declared)}"


@pytest.mark.parametrize("source", SOURCES)
def test_every_host_related_key_we_set_is_a_switch_or_reviewed(source):
    rows = rows_by_values_source()[source]
    src = source_of(rows[0])
    covered = set()
    for r in rows:
        covered |= set(workloads()[r].get("switches") or {}) | set(workloads()[r].get("reviewed") or {})
    for leaf in sorted(guarded_leaves(src.ours or {})):
        assert any(leaf == c or leaf.startswith(c + ".") for c in covered), (
            f"{src.label}: our values set {leaf}, which touches host access; make it a switch of a row "
            "in manifests/facts/host-access.yaml, or list it under `reviewed` with the reason it gives nothing baseline forbids"
        )


@pytest.mark.parametrize("row", ROWS)
def test_the_namespace_admits_each_shipped_workload(row):
    if not source_of(row).shipped:
        pytest.skip(f"{row}: {source_of(row).label} is deferred; admitted once it ships")
    assert admission_problems(row) == []


def test_a_namespace_is_privileged_only_where_a_workload_needs_it():
    needing = {}
    for row in ROWS:
        if set(workloads()[row]["needs"]) - ADMITS["baseline"]:
            needing.setdefault(source_of(row).namespace, []).append(row)
    for ns, entry in namespaces().items():
        if entry["pod_security"] != "privileged":
            continue
        if "precaution" in entry:
            assert ns not in needing, f"{ns} is a precaution, but {needing[ns]} need host access there: say why instead"
        else:
            assert ns in needing, f"{ns} is privileged, but no workload in host-access.yaml needs it: a precaution, or baseline"


# --- The checks fail when they should ---------------------------------------------------


def test_the_log_shipper_in_a_baseline_namespace_is_refused():
    """The first-day defect: Alloy mounts /var/log (hostPath) in `logging`, which Pod
    Security enforced at baseline."""
    assert "alloy.mounts.varlog" in (workloads()["node-log-shipper"].get("switches") or {})
    (problem,) = admission_problems("node-log-shipper", levels={"logging": "baseline"})
    assert "needs hostPath" in problem and "namespace logging" in problem


def test_a_value_that_turns_host_access_on_fails_until_declared():
    values = copy.deepcopy(source_of("certificates").values)
    values["webhook"]["hostNetwork"] = True
    (problem,) = needs_problems("certificates", values)
    assert "webhook.hostNetwork turns on hostNetwork" in problem


def test_a_value_that_turns_host_access_on_in_a_baseline_namespace_fails_even_when_declared():
    row = workloads()["certificates"]
    declared = dict(row, needs=["hostNetwork"])
    try:
        workloads()["certificates"] = declared
        values = deep_merge(source_of("certificates").values, {"webhook": {"hostNetwork": True}})
        assert needs_problems("certificates", values) == []
        (problem,) = admission_problems("certificates", levels={"cert-manager": "baseline"})
        assert "needs hostNetwork" in problem and "baseline" in problem
    finally:
        workloads()["certificates"] = row


def test_a_need_no_value_turns_on_any_more_fails():
    values = deep_merge(source_of("node-log-shipper").values, {"alloy": {"mounts": {"varlog": False}}})
    (problem,) = needs_problems("node-log-shipper", values)
    assert "declares hostPath, but no value turns it on" in problem


def test_a_hostpath_volume_where_a_secret_volume_was_is_caught():
    values = copy.deepcopy(source_of("dns").values)
    values["extraVolumes"].append({"name": "host", "hostPath": {"path": "/etc"}})
    (problem,) = needs_problems("dns", values)
    assert "extraVolumes turns on hostPath" in problem


def test_a_capability_beyond_baselines_list_is_caught_and_baselines_own_are_not():
    values = copy.deepcopy(source_of("monitoring-stack").values)
    assert needs_problems("monitoring-stack", values) == [], "CHOWN and DAC_OVERRIDE are baseline's"
    values["grafana"]["initChownData"]["securityContext"]["capabilities"]["add"] = ["CHOWN", "SYS_ADMIN"]
    (problem,) = needs_problems("monitoring-stack", values)
    assert "turns on capabilities" in problem


def test_traefik_in_the_host_network_or_without_host_ports_is_caught():
    """RKE2's Traefik binds 80/443 on the workers through hostPort, in its own network
    namespace; the values are the bundled chart's defaults with helm-values/traefik.yaml."""
    src = source_of("ingress-controller")
    assert (src.chart, src.namespace) == ("rke2-traefik", "kube-system")
    values = deep_merge(src.values, {"hostNetwork": True})
    (problem,) = needs_problems("ingress-controller", values)
    assert "hostNetwork turns on hostNetwork" in problem
    values = deep_merge(src.values, {"ports": {"web": {"hostPort": None}, "websecure": {"hostPort": None}}})
    (problem,) = needs_problems("ingress-controller", values)
    assert "declares hostPort, but no value turns it on" in problem
