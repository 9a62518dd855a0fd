//! The report of one run: what each step found or did, for the terminal, `--json`, the
//! exit code and the node state.

use super::state::{self, RunRecord, SecretFailure, StepRecord};
use super::step::{Mode, Outcome, StepReport};
use serde::Serialize;

/// Exit codes of `bootstrap` and `plan`, one per failure class (documented in the README).
pub mod exit_code {
    pub const CONVERGED: i32 = 0;
    pub const CONFIG: i32 = 3;
    pub const JOIN_TOKEN: i32 = 4;
    pub const DATA_DISK: i32 = 5;
    pub const FILES: i32 = 6;
    pub const START_RKE2: i32 = 7;
    pub const CLUSTER_SECRETS: i32 = 8;
    /// Every code a failed step ends a run with (tests loop over it).
    pub const STEP_FAILURES: &[i32] = &[
        CONFIG,
        JOIN_TOKEN,
        DATA_DISK,
        FILES,
        START_RKE2,
        CLUSTER_SECRETS,
    ];

    /// The code a run ends with when step `step` fails.
    pub fn for_step(step: &str) -> i32 {
        match step {
            "config" => CONFIG,
            "join-token" => JOIN_TOKEN,
            "data-disk" => DATA_DISK,
            "start-rke2" => START_RKE2,
            "cluster-secrets" => CLUSTER_SECRETS,
            _ => FILES,
        }
    }
}

/// What to do when a step fails, in one line.
fn hint(step: &str) -> &'static str {
    match step {
        "config" => "fix the node config (user_data in infra-tofu, or --config FILE) and run again",
        "join-token" => "check the VM's managed identity, its 'Key Vault Secrets User' role and the secret; `canarie-agent doctor` shows which",
        "data-disk" => "run `canarie-agent disk inspect DEVICE` to see what is on the disk; nothing was written to it",
        "rke2-config" | "server-manifests" => "check free space and permissions under /etc/rancher and /var/lib/rancher",
        "start-rke2" => "see `journalctl -u rke2-server -u rke2-agent` and `canarie-agent doctor`",
        "cluster-secrets" => "create the named secret in the vault (infra-tofu keyvault.tf) or fix cluster_secrets in the node config; the VM's identity needs 'Key Vault Secrets User' on it",
        _ => "run `canarie-agent doctor`",
    }
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
            .map_or(exit_code::CONVERGED, |s| exit_code::for_step(s.name))
    }

    /// The one stderr line of a failed run: the step, the cause, what to do.
    pub fn failure_line(&self) -> Option<String> {
        let step = self.first_failure()?;
        Some(format!(
            "{} failed in step {}: {}; {}",
            self.mode,
            step.name,
            step.error.as_deref().unwrap_or("unknown error"),
            hint(step.name)
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
                    name: s.name.to_string(),
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
                step.name, step.duration_ms
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
    pub fn from_error(name: &'static str, e: anyhow::Error) -> StepReport {
        StepReport {
            name,
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
    use crate::reconcile::STEP_NAMES;

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
        for step in STEP_NAMES {
            let code = exit_code::for_step(step);
            assert!(exit_code::STEP_FAILURES.contains(&code), "{step}: {code}");
            assert!(
                row(code).contains(&format!("`{step}`")),
                "README's row for exit code {code} does not name step {step}"
            );
        }
        for &code in exit_code::STEP_FAILURES {
            row(code);
        }
    }
}
