"""The agent's Prometheus textfile metrics, read by a real parser (prometheus-client's).

Runs the real `canarie-agent bootstrap` in a --root sandbox whose IMDS is a loopback port
nothing listens on, so the run fails in a known step and still writes the metrics file; the
converged case is checked by agent/tests/azure_reports.rs. The monitoring bundle's
PrometheusRule uses these exact names.
"""

import json
import os
import pathlib
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = pathlib.Path(__file__).resolve().parents[3]
BIN = REPO / "target" / "debug" / "canarie-agent"
METRICS = "var/lib/canarie-agent/metrics/canarie_agent.prom"
NAMES = {
    "canarie_agent_last_run_timestamp_seconds",
    "canarie_agent_last_run_success",
    "canarie_agent_last_run_exit_code",
    "canarie_agent_step_duration_seconds",
}


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `cargo build --workspace --bins` first")
    root = tmp_path_factory.mktemp("root")
    (root / "etc").mkdir()
    (root / "etc/machine-id").write_text("5c2b1a0e9d8f4e7a8b6c5d4e3f2a1b0c\n")
    config = root / "node.json"
    config.write_text((REPO / "examples/server.json").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIE_")}
    env.pop("JOURNAL_STREAM", None)
    run = subprocess.run(
        [str(BIN), "bootstrap", "--root", str(root), "--config", str(config),
         "--imds-url", "http://127.0.0.1:9", "--imds-deadline", "1",
         "--vault-url", "https://127.0.0.1:9", "--vault-deadline", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    return run, root


def test_the_metrics_file_parses_and_names_the_run(failed_run):
    run, root = failed_run
    assert run.returncode not in (0, 1, 2), run.stderr
    text = (root / METRICS).read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == NAMES, text
    for family in families.values():
        assert family.type == "gauge" and family.documentation, family.name
    value = lambda name: families[name].samples[0].value
    assert value("canarie_agent_last_run_success") == 0
    assert value("canarie_agent_last_run_exit_code") == run.returncode
    assert value("canarie_agent_last_run_timestamp_seconds") > 1.7e9
    steps = [s.labels["step"] for s in families["canarie_agent_step_duration_seconds"].samples]
    # One sample per step, only the `step` label (no high-cardinality labels).
    assert len(steps) == len(set(steps)) >= 7, steps
    for sample in families["canarie_agent_step_duration_seconds"].samples:
        assert set(sample.labels) == {"step"} and sample.value >= 0


def test_the_metrics_file_is_readable_by_node_exporter(failed_run):
    _, root = failed_run
    assert oct((root / METRICS).stat().st_mode & 0o777) == "0o644"
