//! The last run as Prometheus metrics for node-exporter's textfile collector: one file,
//! replaced atomically after every `bootstrap`, in the text exposition format. Names only,
//! no secrets, one label (`step`, a handful of fixed values).

use crate::fsutil;
use crate::paths::Root;
use anyhow::{Context, Result};

/// The file node-exporter's textfile collector reads (the monitoring bundle mounts its
/// directory).
pub const METRICS_FILE: &str = "/var/lib/canarie-agent/metrics/canarie_agent.prom";

/// What the metrics say about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMetrics {
    /// When the run ended, in Unix seconds.
    pub timestamp_seconds: f64,
    pub success: bool,
    pub exit_code: i32,
    /// Each step's name and duration in seconds, in run order.
    pub steps: Vec<(&'static str, f64)>,
}

/// The exposition text (pure, so tests and the writer agree).
pub fn render(m: &RunMetrics) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(Option<&str>, String)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (step, value) in samples {
            match step {
                Some(step) => out.push_str(&format!("{name}{{step=\"{step}\"}} {value}\n")),
                None => out.push_str(&format!("{name} {value}\n")),
            }
        }
    };
    gauge(
        "canarie_agent_last_run_timestamp_seconds",
        "When the last canarie-agent bootstrap run ended, in Unix seconds.",
        &[(None, format!("{:.3}", m.timestamp_seconds))],
    );
    gauge(
        "canarie_agent_last_run_success",
        "1 when the last bootstrap run converged the node, else 0.",
        &[(None, u8::from(m.success).to_string())],
    );
    gauge(
        "canarie_agent_last_run_exit_code",
        "Exit code of the last bootstrap run (README: exit codes).",
        &[(None, m.exit_code.to_string())],
    );
    let steps: Vec<(Option<&str>, String)> = m
        .steps
        .iter()
        .map(|(name, secs)| (Some(*name), format!("{secs:.3}")))
        .collect();
    gauge(
        "canarie_agent_step_duration_seconds",
        "How long each step of the last bootstrap run took, in seconds (0 when it did not run).",
        &steps,
    );
    out
}

/// Replaces the metrics file under `root` (temp file + rename: the collector never reads
/// half a file). Mode 0644: node-exporter reads it as another user.
pub fn write(root: &Root, m: &RunMetrics) -> Result<()> {
    fsutil::write_if_changed(&root.join(METRICS_FILE), render(m).as_bytes(), 0o644)
        .context("writing the Prometheus metrics file")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_type() {
        let text = render(&RunMetrics {
            timestamp_seconds: 1.5,
            success: false,
            exit_code: 4,
            steps: vec![("config", 0.25), ("join-token", 2.0)],
        });
        assert!(text.contains("canarie_agent_last_run_success 0\n"));
        assert!(text.contains("canarie_agent_step_duration_seconds{step=\"join-token\"} 2.000\n"));
        assert_eq!(text.matches("# TYPE").count(), 4);
    }
}
