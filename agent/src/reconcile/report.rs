//! The report of one run: what each step found or did, for the terminal, `--json`, the
//! exit code and the node state.

use super::state::{self, RunRecord, SecretFailure, StepRecord};
use super::step::{Mode, Outcome, StepReport};
use super::steps::StepId;
use crate::config::{ConfigSource, NodeConfig};
use serde::Serialize;

/// Exit codes of `bootstrap` and `plan`: 0 when converged, else the failed step's
/// ([`StepId::exit_code`], documented in the README).
pub mod exit_code {
    pub const CONVERGED: i32 = 0;
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub mode: &'static str,
    pub converged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub changes: usize,
    pub duration_ms: u64,
    /// What the run cost the node (filled in when the run ends).
    pub usage: Usage,
    pub steps: Vec<StepReport>,
}

/// CPU time and memory of the agent process itself, and of the programs it ran (mkfs,
/// e2fsck). The agent's own CPU time excludes every wait on the network or a child.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub cpu_ms: u64,
    pub max_rss_kib: u64,
    pub children_cpu_ms: u64,
}

impl Usage {
    pub fn now() -> Usage {
        use nix::sys::resource::{getrusage, UsageWho};
        let cpu_ms = |u: &nix::sys::resource::Usage| {
            let t = |tv: nix::sys::time::TimeVal| {
                tv.tv_sec() as u64 * 1000 + tv.tv_usec() as u64 / 1000
            };
            t(u.user_time()) + t(u.system_time())
        };
        match (
            getrusage(UsageWho::RUSAGE_SELF),
            getrusage(UsageWho::RUSAGE_CHILDREN),
        ) {
            (Ok(me), Ok(children)) => Usage {
                cpu_ms: cpu_ms(&me),
                // Linux reports ru_maxrss in KiB.
                max_rss_kib: me.max_rss().max(0) as u64,
                children_cpu_ms: cpu_ms(&children),
            },
            _ => Usage::default(),
        }
    }
}

impl RunReport {
    pub fn new(mode: Mode) -> Self {
        RunReport {
            mode: match mode {
                Mode::Plan => "plan",
                Mode::Apply => "bootstrap",
            },
            converged: false,
            config_source: None,
            role: None,
            node_name: None,
            changes: 0,
            duration_ms: 0,
            usage: Usage::default(),
            steps: Vec::new(),
        }
    }

    /// Names the node config the run converges to.
    pub fn describe_config(&mut self, source: &ConfigSource, config: &NodeConfig) {
        self.config_source = Some(source.to_string());
        self.role = Some(config.role.to_string());
        self.node_name = config.node_name.clone();
    }

    pub fn push(&mut self, step: StepReport) {
        self.changes += step.changes.len();
        self.steps.push(step);
    }

    pub fn failed(&self) -> bool {
        self.steps.iter().any(StepReport::failed)
    }

    pub fn first_failure(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.failed())
    }

    pub fn exit_code(&self) -> i32 {
        self.first_failure()
            .map_or(exit_code::CONVERGED, |s| s.step.exit_code())
    }

    /// The one stderr line of a failed run: the step, the cause, what to do.
    pub fn failure_line(&self) -> Option<String> {
        let step = self.first_failure()?;
        Some(format!(
            "{} failed in step {}: {}; {}",
            self.mode,
            step.step,
            step.error.as_deref().unwrap_or("unknown error"),
            step.step.info().hint
        ))
    }

    /// The run as the node state records it.
    pub fn record(&self, started_at: String) -> RunRecord {
        RunRecord {
            started_at,
            finished_at: state::now_rfc3339(),
            result: if self.converged {
                "converged"
            } else {
                "failed"
            }
            .into(),
            error: self.failure_line(),
            config_source: self.config_source.clone(),
            steps: self
                .steps
                .iter()
                .map(|s| StepRecord {
                    name: s.step.name().to_string(),
                    outcome: s.outcome.as_str().to_string(),
                    changes: s.changes.len(),
                    duration_ms: s.duration_ms,
                    secret: s.failure.as_ref().and_then(SecretFailure::of),
                })
                .collect(),
        }
    }

    /// Human output: a line per step, its changes indented, then the verdict.
    pub fn render_human(&self) -> String {
        let mut out = String::new();
        if let Some(source) = &self.config_source {
            out.push_str(&format!(
                "node config: {source} (role {}, node {})\n",
                self.role.as_deref().unwrap_or("?"),
                self.node_name.as_deref().unwrap_or("from hostname")
            ));
        }
        for step in &self.steps {
            let what = match step.outcome {
                Outcome::Unchanged => "no changes".to_string(),
                Outcome::Changed if self.mode == "plan" => {
                    format!("{} to make", step.changes.len())
                }
                Outcome::Changed => format!("{} made", step.changes.len()),
                Outcome::Skipped => "skipped".to_string(),
                Outcome::Failed => "FAILED".to_string(),
            };
            out.push_str(&format!(
                "{:<17} {what}  ({} ms)\n",
                step.step.name(),
                step.duration_ms
            ));
            for change in &step.changes {
                out.push_str(&format!("    {change}\n"));
            }
            if let Some(w) = &step.warning {
                out.push_str(&format!("    warning: {w}\n"));
            }
            if let Some(e) = &step.error {
                out.push_str(&format!("    error: {e}\n"));
            }
        }
        let verdict = match (self.mode, self.failed(), self.changes) {
            (_, true, _) => "failed".to_string(),
            ("plan", false, 0) => "no changes: the node is converged".to_string(),
            ("plan", false, n) => format!("{n} changes to make"),
            (_, false, 0) => "converged, nothing changed".to_string(),
            (_, false, n) => format!("converged, {n} changes made"),
        };
        out.push_str(&format!("{}: {verdict}\n", self.mode));
        out
    }
}

impl StepReport {
    /// A step that failed before it could run its own life (its inputs could not be built).
    pub fn from_error(step: StepId, e: anyhow::Error) -> StepReport {
        StepReport {
            step,
            outcome: Outcome::Failed,
            changes: Vec::new(),
            duration_ms: 0,
            warning: None,
            error: Some(format!("{e:#}")),
            failure: Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's exit-code table is what a failed step really exits with.
    #[test]
    fn the_readme_documents_every_step_failure_code() {
        let readme = include_str!("../../../README.md");
        let row = |code: i32| {
            readme
                .lines()
                .find(|l| l.starts_with(&format!("| {code} |")))
                .unwrap_or_else(|| panic!("README has no row for exit code {code}"))
        };
        let failures = crate::reconcile::steps::failure_exit_codes();
        for step in StepId::ALL {
            let code = step.exit_code();
            assert!(failures.contains(&code), "{step}: {code}");
            assert!(
                row(code).contains(&format!("`{step}`")),
                "README's row for exit code {code} does not name step {step}"
            );
        }
        for &code in &failures {
            row(code);
        }
    }
}
