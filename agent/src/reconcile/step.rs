//! The life every concern shares: observe and decide (`plan`), then `apply`, then report.

use super::change::Change;
use super::steps::StepId;
use serde::Serialize;
use std::time::{Duration, Instant};

/// `plan` stops after observe+decide; `apply` makes the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// One concern of the node (config, join token, data disk, …).
#[allow(async_fn_in_trait)] // steps run on one task, never as trait objects
pub trait Step {
    /// What later steps get from this one (the loaded config, whether the disk is mounted,
    /// what the written files need to take effect): they never read a step's own fields.
    type Output;
    /// Which step this is (its row in the step table).
    fn id(&self) -> StepId;
    /// Observe the node and decide what must change. Read-only.
    async fn plan(&mut self) -> anyhow::Result<Vec<Change>>;
    /// Make the changes `plan` decided; returns what was done. Called only after `plan`.
    async fn apply(&mut self) -> anyhow::Result<Vec<Change>>;
    /// A warning worth reporting even when the step succeeded (an offline fallback).
    fn warning(&self) -> Option<String> {
        None
    }
    /// True when the step decided it has nothing to do on this node (no data disk, an agent's
    /// manifests).
    fn skipped(&self) -> bool {
        false
    }
    /// The step's output, once it succeeded: what `plan` found (and `apply` did).
    fn output(self) -> anyhow::Result<Self::Output>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Unchanged,
    Changed,
    Skipped,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Changed => "changed",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// What one step found or did.
#[derive(Debug, Serialize)]
pub struct StepReport {
    #[serde(rename = "name")]
    pub step: StepId,
    pub outcome: Outcome,
    pub changes: Vec<Change>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The error chain as one sentence (never a secret: secrets are redacted types).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub failure: Option<anyhow::Error>,
}

impl StepReport {
    pub fn failed(&self) -> bool {
        self.outcome == Outcome::Failed
    }

    /// A step that never ran because an earlier one failed.
    pub fn not_run(step: StepId) -> StepReport {
        StepReport {
            step,
            outcome: Outcome::Skipped,
            changes: Vec::new(),
            duration_ms: 0,
            warning: Some("not run: an earlier step failed".into()),
            error: None,
            failure: None,
        }
    }
}

/// Runs one step in `mode`, logging its start, decision, duration and outcome. The output is
/// there when the step succeeded.
pub async fn run_step<S: Step>(mut step: S, mode: Mode) -> (StepReport, Option<S::Output>) {
    let id = step.id();
    let name = id.name();
    let start = Instant::now();
    tracing::info!(step = name, mode = ?mode, "step started");
    let result = async {
        let planned = step.plan().await?;
        tracing::info!(step = name, changes = planned.len(), decision = %summary(&planned), "step decided");
        match mode {
            Mode::Apply if !planned.is_empty() => step.apply().await,
            _ => Ok(planned),
        }
    }
    .await;
    let duration = start.elapsed();
    let warning = step.warning();
    if let Some(w) = &warning {
        tracing::warn!(step = name, warning = %w, "step warning");
    }
    let skipped = step.skipped();
    let result = result.and_then(|changes| Ok((changes, step.output()?)));
    let (report, output) = match result {
        Ok((changes, output)) => (
            StepReport {
                step: id,
                outcome: if skipped {
                    Outcome::Skipped
                } else if changes.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Changed
                },
                changes,
                duration_ms: millis(duration),
                warning,
                error: None,
                failure: None,
            },
            Some(output),
        ),
        Err(e) => (
            StepReport {
                step: id,
                outcome: Outcome::Failed,
                changes: Vec::new(),
                duration_ms: millis(duration),
                warning,
                error: Some(format!("{e:#}")),
                failure: Some(e),
            },
            None,
        ),
    };
    match &report.error {
        None => tracing::info!(
            step = name,
            outcome = report.outcome.as_str(),
            changes = report.changes.len(),
            duration_ms = report.duration_ms,
            "step finished"
        ),
        Some(e) => {
            tracing::error!(step = name, outcome = "failed", duration_ms = report.duration_ms, error = %e, "step failed")
        }
    }
    (report, output)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn summary(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes".into();
    }
    changes
        .iter()
        .map(|c| format!("{} {}", c.action, c.target))
        .collect::<Vec<_>>()
        .join("; ")
}
