"""The lifecycle table (docs/lifecycle.md): every pin has a row, every row agrees with its
pin, and no pinned line is past its end of life on the day the tests run."""

from __future__ import annotations

import datetime
import re

import hcl2
import pytest

from bundlelib import (
    REF,
    REPO,
    deferred_bundle_dirs,
    fleet_file,
    gitrepo_path,
    helm_options,
    kubernetes_minor,
    load_yaml,
    rke2_bundled_charts,
    rke2_version,
    shipped_bundle_dirs,
)

DOC = REPO / "docs" / "lifecycle.md"
COLUMNS = ["Component", "Pinned", "Line", "End of life", "Next line / successor", "Pinned in", "Basis"]
# Seeded HelmCharts whose chart belongs to another component's row.
COMPONENT_OF_CHART = {"fleet-crd": "fleet"}


def table() -> dict[str, dict[str, str]]:
    """The rows after the <!-- lifecycle-table --> marker, by component."""
    text = DOC.read_text()
    assert "<!-- lifecycle-table -->" in text, "docs/lifecycle.md lost its table marker"
    lines = text.split("<!-- lifecycle-table -->", 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rule, *body = rows
    assert header == COLUMNS and set("".join(rule)) <= set("-: ")
    out = {}
    for cells in body:
        row = dict(zip(COLUMNS, cells))
        assert len(cells) == len(COLUMNS), f"row {cells[0]!r} has {len(cells)} cells"
        assert row["Component"] not in out, f"two rows for {row['Component']}"
        out[row["Component"]] = row
    return out


def add(pins: dict[str, dict[str, str]], component: str, version: str, where: str) -> None:
    pins.setdefault(component, {})[where] = str(version)


def pins() -> dict[str, dict[str, str]]:
    """component -> {where it is pinned: version}, gathered from the files the tools read."""
    found: dict[str, dict[str, str]] = {}
    rke2 = rke2_version()
    add(found, "rke2", rke2, "agent/src/rke2/mod.rs")
    vagrant = re.search(r'ENV\.fetch\("CANARIE_RKE2_VERSION", "([^"]+)"\)', (REPO / "Vagrantfile").read_text())
    assert vagrant, "the Vagrantfile lost its RKE2_VERSION default"
    add(found, "rke2", vagrant.group(1), "Vagrantfile")
    standin = re.search(r'echo "rke2 version (v\S+) ', (REPO / "vm-tests/guest/usr/local/bin/rke2").read_text())
    assert standin, "the vm-tests RKE2 stand-in lost its --version answer"
    add(found, "rke2", standin.group(1), "vm-tests/guest/usr/local/bin/rke2")
    add(found, "kubernetes", kubernetes_minor(), "derived from the RKE2 pin")
    # The charts RKE2 installs itself: the versions of the pinned release.
    for name in ("rke2-cilium", "rke2-traefik"):
        add(found, name, rke2_bundled_charts()[name], f"reference/rke2/chart_versions-{rke2}.yaml")
    for seed in sorted((REPO / "manifests" / "seed").glob("*.yaml")):
        doc = load_yaml(seed)
        if doc.get("kind") == "HelmChart":
            chart = doc["spec"]["chart"]
            add(found, COMPONENT_OF_CHART.get(chart, chart), doc["spec"]["version"], str(seed.relative_to(REPO)))
    for bundle in shipped_bundle_dirs() + deferred_bundle_dirs():
        helm = helm_options(load_yaml(fleet_file(bundle)) or {})
        if helm:
            add(found, helm["chart"], helm["version"], gitrepo_path(bundle))
    terraform = hcl2.load(open(REPO / "infra-tofu" / "versions.tf"))["terraform"][0]
    add(found, "opentofu", terraform["required_version"][0] if isinstance(terraform["required_version"], list) else terraform["required_version"], "infra-tofu/versions.tf")
    for providers in terraform["required_providers"]:
        for spec in providers.values():
            spec = spec[0] if isinstance(spec, list) else spec
            add(found, spec["source"], spec["version"], "infra-tofu/versions.tf")
    return found


def problems(rows: dict[str, dict[str, str]], pinned: dict[str, dict[str, str]], today: datetime.date) -> list[str]:
    out = []
    for component, where in sorted(pinned.items()):
        versions = set(where.values())
        if len(versions) > 1:
            out.append(f"{component} is pinned to different versions: {where}")
        row = rows.get(component)
        if row is None:
            out.append(f"{component} is pinned ({where}) but has no row in docs/lifecycle.md")
            continue
        if row["Pinned"] not in versions:
            out.append(f"{component}: docs/lifecycle.md says {row['Pinned']}, the pin is {sorted(versions)}")
    for component, row in sorted(rows.items()):
        if component not in pinned:
            out.append(f"{component} has a row in docs/lifecycle.md but nothing pins it")
        try:
            eol = datetime.date.fromisoformat(row["End of life"])
        except ValueError:
            out.append(f"{component}: end of life {row['End of life']!r} is not a date (YYYY-MM-DD)")
            continue
        if eol < today:
            out.append(f"{component} {row['Pinned']}: {row['Line']} reached its end of life on {eol}; move to {row['Next line / successor']} (docs/lifecycle.md, 'Refreshing the table')")
    return out


def test_every_pin_has_a_current_row():
    assert problems(table(), pins(), datetime.date.today()) == []


def test_pins_are_found_everywhere_they_live():
    found = pins()
    assert set(found["rke2"]) == {"agent/src/rke2/mod.rs", "Vagrantfile", "vm-tests/guest/usr/local/bin/rke2"}
    assert set(found["fleet"]) == {"manifests/seed/canarie-fleet.yaml", "manifests/seed/canarie-fleet-crd.yaml"}
    assert {"hashicorp/azurerm", "hashicorp/random", "opentofu", "longhorn", "cert-manager", "kyverno", "falco"} <= set(found)


def test_bundled_charts_have_reference_data_for_the_pinned_release():
    found = pins()
    (cilium,) = set(found["rke2-cilium"].values())
    (traefik,) = set(found["rke2-traefik"].values())
    assert (REF / "charts" / "cilium" / f"rke2-cilium-{cilium}.values.schema.json").is_file()
    assert (REF / "charts" / "traefik" / f"rke2-traefik-{traefik}.values.yaml").is_file()


ROW = {"Pinned": "1.0", "Line": "1", "End of life": "2030-01-01", "Next line / successor": "2"}


@pytest.mark.parametrize(
    "rows, pinned, expected",
    [
        ({}, {"x": {"a": "1.0"}}, "x is pinned ("),
        ({"x": {**ROW, "Pinned": "0.9"}}, {"x": {"a": "1.0"}}, "x: docs/lifecycle.md says 0.9"),
        ({"x": {**ROW, "End of life": "2026-01-01"}}, {"x": {"a": "1.0"}}, "x 1.0: 1 reached its end of life on 2026-01-01"),
        ({"x": {**ROW, "End of life": "soon"}}, {"x": {"a": "1.0"}}, "is not a date"),
        ({"x": ROW, "y": ROW}, {"x": {"a": "1.0"}}, "y has a row in docs/lifecycle.md but nothing pins it"),
        ({"x": ROW}, {"x": {"a": "1.0", "b": "1.1"}}, "x is pinned to different versions"),
    ],
)
def test_the_check_fails_on_each_kind_of_drift(rows, pinned, expected):
    found = problems(rows, pinned, datetime.date(2026, 6, 1))
    assert len(found) == 1 and expected in found[0], found


def test_a_date_in_the_past_fails_only_from_the_next_day():
    rows = {"x": {**ROW, "End of life": "2026-06-01"}}
    assert problems(rows, {"x": {"a": "1.0"}}, datetime.date(2026, 6, 1)) == []
    assert problems(rows, {"x": {"a": "1.0"}}, datetime.date(2026, 6, 2))
