//! The reconciler: each concern is a step that observes, decides, applies and reports.
//! `plan` runs observe+decide; `bootstrap` applies too. Knows steps, not HTTP.

pub mod change;
pub mod inputs;
pub mod report;
pub mod state;
pub mod step;
pub mod steps;

pub use change::{Action, Change};
pub use report::RunReport;
pub use step::Mode;
pub use steps::{StepId, STEP_NAMES};

use crate::azure::{ImdsClient, KeyVaultClient, RetryPolicy};
use crate::nodefile::{Effect, RenderedFile};
use crate::paths::{Root, RKE2_MANIFESTS_DIR};
use crate::rke2::{self, NodeFacts};
use anyhow::Result;
use inputs::KeyVault;
use state::NodeState;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use step::{run_step, StepReport};
use steps::{
    cluster_secrets::ClusterSecretsStep, config::ConfigStep, data_disk::DataDiskStep,
    files::FilesStep, join_token::JoinTokenStep, start::StartStep,
};

/// Everything a run needs from outside: where the node's files are, how to reach Azure and
/// systemd, and how long to wait.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: Root,
    pub imds_url: String,
    pub vault_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub dbus_address: Option<String>,
    pub imds_policy: RetryPolicy,
    pub vault_policy: RetryPolicy,
    /// Deadlines on a node that converged before: it can fall back on its local state, so
    /// a boot without Azure need not wait the full first-boot deadlines.
    pub fallback_deadline: Duration,
    pub rke2_start_timeout: Duration,
}

impl Context {
    pub fn new(root: Root, imds_url: String) -> Context {
        Context {
            root,
            imds_url,
            vault_url: None,
            ca_file: None,
            config_file: None,
            dbus_address: None,
            imds_policy: RetryPolicy::IMDS,
            vault_policy: RetryPolicy::VAULT,
            fallback_deadline: Duration::from_secs(30),
            rke2_start_timeout: Duration::from_secs(900),
        }
    }

    fn policy(&self, base: RetryPolicy, may_fall_back: bool) -> RetryPolicy {
        if may_fall_back {
            RetryPolicy {
                deadline: base.deadline.min(self.fallback_deadline),
                ..base
            }
        } else {
            base
        }
    }

    pub fn imds(&self, may_fall_back: bool) -> Result<ImdsClient> {
        ImdsClient::new(&self.imds_url, self.policy(self.imds_policy, may_fall_back))
    }

    pub fn vault(&self, may_fall_back: bool) -> Result<KeyVaultClient> {
        KeyVaultClient::new(
            self.vault_url.as_deref(),
            self.ca_file.as_deref(),
            self.policy(self.vault_policy, may_fall_back),
        )
    }
}

/// Runs every step in `mode`. Only a failure to start at all is an `Err`; step failures are
/// in the report.
pub async fn run(cx: &Context, mode: Mode) -> Result<RunReport> {
    let started = Instant::now();
    let started_at = state::now_rfc3339();
    let machine_id = state::machine_id(&cx.root)?;
    let state = NodeState::load(&cx.root, &machine_id);
    let mut report = RunReport::new(mode);

    let mut config_step = ConfigStep::new(cx, &state);
    report.push(run_step(&mut config_step, mode).await);
    let Some((config, source)) = config_step.loaded.take().filter(|_| !report.failed()) else {
        return Ok(finish(cx, mode, report, &state, None, started, started_at));
    };
    report.config_source = Some(source.to_string());
    report.role = Some(config.role.to_string());
    report.node_name = config.node_name.clone();

    // One managed-identity token for the run's Key Vault reads.
    let vault = KeyVault::new(cx, &config.join_token, state.has_converged());
    // The token fetch does not wait for the disk, nor the disk for Azure.
    let mut token_step = JoinTokenStep::new(cx, &vault, state.has_converged());
    let disk_wait = (mode == Mode::Plan).then_some(Duration::ZERO);
    let mut disk_step = DataDiskStep::new(cx, config.data_disk.as_ref(), disk_wait);
    let (token_report, disk_report) = tokio::join!(
        run_step(&mut token_step, mode),
        run_step(&mut disk_step, mode)
    );
    let token_changed = !token_report.changes.is_empty();
    report.push(token_report);
    report.push(disk_report);
    if report.failed() {
        return Ok(finish(cx, mode, report, &state, None, started, started_at));
    }

    let facts = NodeFacts {
        data_disk_mounted: disk_step.mounted_after_run(),
    };
    let rendered = match rke2::render(&config, &facts) {
        Ok(files) => files,
        Err(e) => {
            report.push(StepReport::from_error(StepId::Rke2Config, e));
            return Ok(finish(cx, mode, report, &state, None, started, started_at));
        }
    };
    let in_manifests_dir = |p: &std::path::Path| p.starts_with(RKE2_MANIFESTS_DIR);
    let (manifests, config_files): (Vec<_>, Vec<_>) = rendered
        .into_iter()
        .partition(|f| in_manifests_dir(&f.path));
    let (owned_manifests, owned_config_files): (Vec<_>, Vec<_>) = rke2::owned_files()
        .into_iter()
        .partition(|f| in_manifests_dir(&f.path));
    let token_version = token_step
        .version
        .clone()
        .or_else(|| state.join_token_version.clone());
    let rke2_inputs = rke2_inputs_digest(&config_files, token_version.as_deref());
    let mut config_files_step =
        FilesStep::new(StepId::Rke2Config, cx, config_files, owned_config_files);
    report.push(run_step(&mut config_files_step, mode).await);
    let mut manifests_step =
        FilesStep::new(StepId::ServerManifests, cx, manifests, owned_manifests);
    report.push(run_step(&mut manifests_step, mode).await);
    if report.failed() {
        return Ok(finish(cx, mode, report, &state, None, started, started_at));
    }
    // Secrets are applied by RKE2 like the other manifests: no restart follows from them.
    let mut secrets_step = ClusterSecretsStep::new(cx, &config, &vault, state.has_converged());
    report.push(run_step(&mut secrets_step, mode).await);
    if report.failed() {
        return Ok(finish(cx, mode, report, &state, None, started, started_at));
    }

    // Written and removed files alike: RKE2 and systemd must see either.
    let effects = config_files_step.effects().chain(manifests_step.effects());
    let reload =
        disk_step.changed_units() || effects.clone().any(|(_, e)| e == Effect::DaemonReload);
    let mut restart_reasons: Vec<String> = effects
        .filter(|(_, e)| *e == Effect::RestartRke2)
        .map(|(path, _)| path.display().to_string())
        .collect();
    if token_changed {
        restart_reasons.push("join token".into());
    }
    if restart_reasons.is_empty()
        && state
            .rke2_inputs
            .as_ref()
            .is_some_and(|last| *last != rke2_inputs)
    {
        restart_reasons.push("files an earlier run wrote but did not restart RKE2 for".into());
    }
    let mut start_step = StartStep::new(
        cx,
        config.role.rke2_unit(),
        reload,
        restart_reasons,
        mode == Mode::Plan,
    );
    report.push(run_step(&mut start_step, mode).await);

    let converged = Converged {
        config: &config,
        token_version: token_step.version.clone(),
        rke2_inputs,
    };
    Ok(finish(
        cx,
        mode,
        report,
        &state,
        Some(converged),
        started,
        started_at,
    ))
}

struct Converged<'a> {
    config: &'a crate::config::NodeConfig,
    token_version: Option<String>,
    rke2_inputs: String,
}

/// What RKE2 reads at start, as a digest: the files whose change restarts it, and the join
/// token's version (the token itself never goes into the node state, not even hashed).
fn rke2_inputs_digest(files: &[RenderedFile], token_version: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for file in files.iter().filter(|f| f.effect == Effect::RestartRke2) {
        for part in [file.path.as_os_str().as_encoded_bytes(), &file.contents] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    }
    hash.update(token_version.unwrap_or_default().as_bytes());
    hex::encode(hash.finalize())
}

/// Completes the report with the steps that did not run and, after `bootstrap`, records
/// the run in the node state (a failed run keeps the last converged config and marker).
fn finish(
    cx: &Context,
    mode: Mode,
    mut report: RunReport,
    state: &NodeState,
    converged: Option<Converged<'_>>,
    started: Instant,
    started_at: String,
) -> RunReport {
    for step in StepId::ALL {
        if !report.steps.iter().any(|s| s.step == step) {
            report.push(StepReport::not_run(step));
        }
    }
    report.duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    report.converged = !report.failed();
    report.usage = report::Usage::now();
    if mode == Mode::Plan {
        return report;
    }
    let mut next = state.clone();
    if let (Some(c), true) = (&converged, report.converged) {
        next.converged_at = Some(state::now_rfc3339());
        next.config_digest = Some(crate::config::digest(c.config));
        if c.token_version.is_some() {
            next.join_token_version = c.token_version.clone();
        }
        // Converged means RKE2 was started or restarted for these inputs, or already had them.
        next.rke2_inputs = Some(c.rke2_inputs.clone());
        if let Err(e) = state::save_last_config(&cx.root, c.config) {
            tracing::warn!(error = %format!("{e:#}"), "could not save the last converged config");
        }
    }
    next.last_run = Some(report.record(started_at));
    if let Err(e) = next.save(&cx.root) {
        tracing::warn!(error = %format!("{e:#}"), "could not save the node state");
    }
    report
}
