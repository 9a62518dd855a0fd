"""canarie-agent's bootstrap metrics, followed from the agent to the alert: the directory
the agent writes (agent/src) is the hostPath node-exporter mounts, the textfile collector
reads where that mount lands, and the PrometheusRule's metric names are ones the agent
writes. The rules themselves are checked and unit-tested by promtool (Prometheus' own rule
parser and evaluator), unpacked from Debian's `prometheus` package by
scripts/deps/fetch-debs.sh, never installed (that would start a server here)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bundlelib import BUNDLES_DIR, REPO, chart_defaults, load_yaml

VALUES = BUNDLES_DIR / "monitoring" / "values.yaml"
AGENT_SRC = REPO / "agent" / "src"
RULE_MAP = "canarie-bootstrap"
COLLECTOR_FLAG = "--collector.textfile.directory="
PROMTOOL = Path(os.environ.get("CANARIE_DEB_CACHE", "/var/cache/canarie-debs")) / "prometheus" / "root" / "usr" / "bin" / "promtool"
METRIC = re.compile(r"\bcanarie_agent_[a-z_]+\b")


def node_exporter_values() -> dict:
    return load_yaml(VALUES)["prometheus-node-exporter"]


def agent_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(AGENT_SRC.rglob("*.rs")))


def metrics_mount() -> dict:
    (mount,) = [m for m in node_exporter_values()["extraHostVolumeMounts"] if m["name"] == "canarie-agent-metrics"]
    return mount


def rule_groups() -> list[dict]:
    return load_yaml(VALUES)["additionalPrometheusRulesMap"][RULE_MAP]["groups"]


def rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"]]


# --- The metrics directory along its path ------------------------------------------------


def test_the_mounted_directory_is_the_one_the_agent_writes():
    host_path = metrics_mount()["hostPath"]
    literals = set(re.findall(r'"(/var/lib/canarie-agent/[^"]*)"', agent_sources()))
    # The agent names the directory, or the .prom file in it (the collector reads *.prom).
    written = {s.rstrip("/") for s in literals} | {str(Path(s).parent) for s in literals if s.endswith(".prom")}
    assert host_path.rstrip("/") in written, (
        f"node-exporter mounts {host_path}, but agent/src names no such directory (it names {sorted(literals)})"
    )


def test_the_mount_is_read_only_and_the_collector_reads_it():
    mount = metrics_mount()
    assert mount["readOnly"] is True, "node-exporter only reads the agent's metrics"
    flags = [a for a in node_exporter_values()["extraArgs"] if a.startswith(COLLECTOR_FLAG)]
    assert flags == [COLLECTOR_FLAG + mount["mountPath"]], "the textfile collector must read where the hostPath is mounted"


def test_our_extra_args_keep_the_charts_defaults():
    """Helm replaces lists: setting extraArgs drops the parent chart's defaults unless we
    repeat them. A chart bump that changes them shows here."""
    ours = node_exporter_values()["extraArgs"]
    pinned = load_yaml(REPO / "reference" / "charts" / "kube-prometheus-stack" / "kube-prometheus-stack-88.5.3.values.yaml")
    defaults = pinned["prometheus-node-exporter"]["extraArgs"]
    assert defaults and all(d in ours for d in defaults), "repeat the chart's default extraArgs in ours"
    # The merged values the admission checks use see the same list.
    assert chart_defaults("kube-prometheus-stack")["prometheus-node-exporter"]["extraArgs"] == defaults


def test_the_host_access_table_declares_the_mount():
    from clusterfacts import needs_problems, source_of, switch_is_on, get_path, workloads

    switches = workloads()["node-exporter"]["switches"]
    assert switches.get("prometheus-node-exporter.extraHostVolumeMounts") == ["hostPath"]
    assert switch_is_on(get_path(source_of("node-exporter").values, "prometheus-node-exporter.extraHostVolumeMounts"), ["hostPath"])
    assert needs_problems("node-exporter") == []


# --- The rules -----------------------------------------------------------------------------


def test_every_metric_a_rule_reads_is_one_the_agent_writes():
    source = agent_sources()
    used = {m for r in rules() for m in METRIC.findall(r["expr"])}
    assert used, "the rules read no canarie_agent_* metric"
    missing = sorted(m for m in used if m not in source)
    assert not missing, f"the rules read {missing}, which agent/src never writes"


def test_the_alerts_the_design_promises_exist():
    exprs = {r["alert"]: r["expr"] for r in rules()}
    assert "canarie_agent_last_run_success == 0" in exprs.values()
    assert any("node_boot_time_seconds" in e and "<" in e for e in exprs.values()), "an alert for a run older than the boot"
    assert any("unless" in e for e in exprs.values()), "an alert for a node without agent metrics"


def promtool(*args, cwd: Path) -> subprocess.CompletedProcess:
    if not PROMTOOL.is_file():
        pytest.fail(f"{PROMTOOL} is missing: run scripts/deps/fetch-debs.sh (scripts/install-deps.sh does)")
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture
def rule_file(tmp_path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


def test_promtool_accepts_the_rules(rule_file):
    result = promtool("check", "rules", rule_file.name, cwd=rule_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    """The check can fail: a rule with a PromQL syntax error is refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "canarie_agent_last_run_success =="}]}]}))
    result = promtool("check", "rules", bad.name, cwd=tmp_path)
    assert result.returncode != 0


# node-exporter's target labels, as kube-prometheus-stack's ServiceMonitor attaches them to
# every series of one node's scrape (the textfile series and node_boot_time_seconds alike).
def target(node: int) -> str:
    return (
        f'job="node-exporter",instance="10.0.1.{node}:9100",namespace="monitoring",'
        f'pod="kube-prometheus-stack-prometheus-node-exporter-{node}",service="kube-prometheus-stack-prometheus-node-exporter",'
        'container="node-exporter",endpoint="http-metrics"'
    )


def alert(name: str, node: int, extra: dict | None = None) -> dict:
    labels = {
        "job": "node-exporter", "instance": f"10.0.1.{node}:9100", "namespace": "monitoring",
        "pod": f"kube-prometheus-stack-prometheus-node-exporter-{node}",
        "service": "kube-prometheus-stack-prometheus-node-exporter", "container": "node-exporter",
        "endpoint": "http-metrics",
    }  # fmt: skip
    rule = next(r for r in rules() if r["alert"] == name)
    return {"exp_labels": {**labels, **rule.get("labels", {}), **(extra or {})}, "exp_annotations": rule["annotations"]}


def test_the_alerts_fire_for_the_right_nodes_only(rule_file):
    """Four nodes, one minute apart, for two hours (epoch 0 = evaluation start):
    node 4 is well; node 5's last run failed; node 6 rebooted at t=600s and its agent has
    not finished since; node 7's node-exporter answers, but no agent metrics come with it."""
    boot = 0
    series = [
        {"series": f"node_boot_time_seconds{{{target(n)}}}", "values": f"{boot}x120"} for n in (4, 5, 7)
    ] + [
        {"series": f"node_boot_time_seconds{{{target(6)}}}", "values": f"{boot}x10 600x110"},
        {"series": f"canarie_agent_last_run_success{{{target(4)}}}", "values": "1x120"},
        {"series": f"canarie_agent_last_run_timestamp_seconds{{{target(4)}}}", "values": "300x120"},
        {"series": f"canarie_agent_last_run_success{{{target(5)}}}", "values": "0x120"},
        {"series": f"canarie_agent_last_run_timestamp_seconds{{{target(5)}}}", "values": "300x120"},
        {"series": f"canarie_agent_last_run_success{{{target(6)}}}", "values": "1x120"},
        {"series": f"canarie_agent_last_run_timestamp_seconds{{{target(6)}}}", "values": "300x120"},
    ]
    tests = {
        "rule_files": [rule_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "CanarieBootstrapFailed", "exp_alerts": [alert("CanarieBootstrapFailed", 5)]},
                    # Node 6 booted at t=600s; its run is older from then on, and the alert
                    # waits its `for` (30m) before firing.
                    {"eval_time": "30m", "alertname": "CanarieBootstrapOlderThanBoot", "exp_alerts": []},
                    {"eval_time": "45m", "alertname": "CanarieBootstrapOlderThanBoot", "exp_alerts": [alert("CanarieBootstrapOlderThanBoot", 6)]},
                    {"eval_time": "20m", "alertname": "CanarieBootstrapMetricsMissing", "exp_alerts": []},
                    {"eval_time": "45m", "alertname": "CanarieBootstrapMetricsMissing", "exp_alerts": [alert("CanarieBootstrapMetricsMissing", 7)]},
                ],
            }
        ],
    }
    test_file = rule_file.parent / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", test_file.name, cwd=rule_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
