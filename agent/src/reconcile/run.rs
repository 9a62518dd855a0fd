//! One run of the reconciler: the steps in order, each one's output handed to the steps
//! after it. A failed step stops the run (`?` on [`Stopped`]); [`Run::finish`] then completes
//! the report and, after `bootstrap`, records the run in the node state.

use super::azure_report::{self, Moment};
use super::inputs::KeyVault;
use super::report::{self, RunReport};
use super::state::{self, NodeState};
use super::step::{run_step, Mode, Step, StepReport};
use super::steps::cluster_secrets::ClusterSecretsStep;
use super::steps::config::ConfigStep;
use super::steps::disk::DiskStep;
use super::steps::files::FilesStep;
use super::steps::join_token::JoinTokenStep;
use super::steps::node_password::{self, NodePasswordStep};
use super::steps::provisioning::ProvisioningStep;
use super::steps::start::StartStep;
use super::steps::StepId;
use super::Context;
use crate::config::NodeConfig;
use crate::disk::Purpose;
use crate::nodefile::{Effect, RenderedFile};
use crate::rke2::{self, NodeFacts};
use anyhow::Result;
use std::time::{Duration, Instant};

/// Runs every step in `mode`. Only a failure to start at all is an `Err`; step failures are
/// in the report.
pub async fn run(cx: &Context, mode: Mode) -> Result<RunReport> {
    let mut run = Run::start(cx, mode)?;
    let converged = run.steps().await.ok();
    if mode == Mode::Apply {
        let moment = Moment::Finished(run.report.report.failure_line());
        azure_report::send(cx, &mut run.state, &moment, run.vm_id.as_deref()).await;
    }
    Ok(run.finish(converged))
}

/// A step failed: the run stops there (the report says why).
struct Stopped;

/// One run: the node state it started from, the report it builds and its clock.
struct Run<'a> {
    cx: &'a Context,
    state: NodeState,
    report: Reporter,
    started: Instant,
    started_at: String,
    /// The VM's id, once platform provisioning read the instance metadata (KVP report).
    vm_id: Option<String>,
}

/// Runs steps in the run's mode and puts their reports in the run's report.
struct Reporter {
    mode: Mode,
    report: RunReport,
}

impl Reporter {
    /// Runs `step`; its output, or [`Stopped`] when it failed.
    async fn step<S: Step>(&mut self, step: S) -> Result<S::Output, Stopped> {
        let (report, output) = run_step(step, self.mode).await;
        self.push(report, output)
    }

    /// Runs `a`, `b` and `c` concurrently; all are reported before a failure of any stops
    /// the run.
    async fn all3<A: Step, B: Step, C: Step>(
        &mut self,
        a: A,
        b: B,
        c: C,
    ) -> Result<(A::Output, B::Output, C::Output), Stopped> {
        let ((report_a, a), (report_b, b), (report_c, c)) = tokio::join!(
            run_step(a, self.mode),
            run_step(b, self.mode),
            run_step(c, self.mode)
        );
        let a = self.push(report_a, a);
        let b = self.push(report_b, b);
        let c = self.push(report_c, c);
        Ok((a?, b?, c?))
    }

    /// `step` failed before it could run its own life (its inputs could not be built).
    fn fail(&mut self, step: StepId, e: anyhow::Error) -> Stopped {
        self.report.push(StepReport::from_error(step, e));
        Stopped
    }

    fn push<T>(&mut self, report: StepReport, output: Option<T>) -> Result<T, Stopped> {
        self.report.push(report);
        output.ok_or(Stopped)
    }
}

/// What a run that reached its end converged to, for the node state.
struct Converged {
    config: NodeConfig,
    token_version: Option<String>,
    rke2_inputs: String,
}

impl<'a> Run<'a> {
    fn start(cx: &'a Context, mode: Mode) -> Result<Self> {
        let started = Instant::now();
        let started_at = state::now_rfc3339();
        let machine_id = state::machine_id(&cx.root)?;
        Ok(Run {
            cx,
            state: NodeState::load(&cx.root, &machine_id),
            report: Reporter {
                mode,
                report: RunReport::new(mode),
            },
            started,
            started_at,
            vm_id: None,
        })
    }

    /// The steps, in order: config → provisioning → (join token ∥ data disk ∥ server state
    /// disk) → RKE2 config and server manifests → cluster secrets → node password → start
    /// RKE2. A failed disk step stops the run before anything is written to RKE2's
    /// directories or RKE2 is started.
    async fn steps(&mut self) -> Result<Converged, Stopped> {
        let cx = self.cx;
        let mode = self.report.mode;
        let may_fall_back = self.state.has_converged();

        let loaded = self.report.step(ConfigStep::new(cx, &self.state)).await?;
        self.report
            .report
            .describe_config(&loaded.source, &loaded.config);
        let config = loaded.config;

        // The VM as Azure asked for it (user, keys, hostname, host keys, root filesystem),
        // before anything reads the hostname or RKE2 starts.
        let provisioned = self
            .report
            .step(ProvisioningStep::new(cx, &self.state))
            .await?;
        self.vm_id = provisioned.vm_id;

        // One managed-identity token for the run's Key Vault reads. The token fetch does not
        // wait for the disk, nor the disk for Azure.
        let vault = KeyVault::new(cx, &config.join_token, may_fall_back);
        let disk_wait = (mode == Mode::Plan).then_some(Duration::ZERO);
        let (token, disk, state_disk) = self
            .report
            .all3(
                JoinTokenStep::new(cx, &vault, may_fall_back),
                DiskStep::new(cx, &config, Purpose::LonghornData, disk_wait),
                DiskStep::new(cx, &config, Purpose::ServerState, disk_wait),
            )
            .await?;

        // Everything is rendered before anything is written; a file that cannot be rendered
        // fails the step that would write it.
        let facts = NodeFacts {
            data_disk_mounted: disk.mounted,
        };
        let config_files = rke2::render_config_files(&config, &facts)
            .map_err(|e| self.report.fail(StepId::Rke2Config, e))?;
        let manifests = rke2::render_manifests(&config)
            .map_err(|e| self.report.fail(StepId::ServerManifests, e))?;
        let token_version = token
            .version
            .as_deref()
            .or(self.state.join_token_version.as_deref());
        let rke2_inputs = rke2_inputs_digest(&config_files, token_version);
        let config_files = self
            .report
            .step(FilesStep::new(
                StepId::Rke2Config,
                cx,
                config_files,
                rke2::owned_config_files(),
            ))
            .await;
        let manifests = self
            .report
            .step(FilesStep::new(
                StepId::ServerManifests,
                cx,
                manifests,
                rke2::owned_manifests(),
            ))
            .await;
        let (config_files, manifests) = (config_files?, manifests?);

        // Secrets are applied by RKE2 like the other manifests: no restart follows from them.
        self.report
            .step(ClusterSecretsStep::new(cx, &config, &vault, may_fall_back))
            .await?;

        // Before RKE2 starts: a replaced node presents its old password and keeps its name.
        // Read from the disk only once it is mounted (`plan` of a disk it would mount: not yet).
        let keeper_mounted = match node_password::keeping_disk(&config).map(|d| d.purpose) {
            Some(Purpose::ServerState) => state_disk.mounted_now,
            Some(Purpose::LonghornData) => disk.mounted_now,
            None => false,
        };
        self.report
            .step(NodePasswordStep::new(cx, &config, keeper_mounted))
            .await?;

        // Written and removed files alike: RKE2 and systemd must see either.
        let effects: Vec<_> = config_files.into_iter().chain(manifests).collect();
        let reload = disk.units_changed
            || state_disk.units_changed
            || effects.iter().any(|(_, e)| *e == Effect::DaemonReload);
        let mut restart_reasons: Vec<String> = effects
            .iter()
            .filter(|(_, e)| *e == Effect::RestartRke2)
            .map(|(path, _)| path.display().to_string())
            .collect();
        if token.changed {
            restart_reasons.push("join token".into());
        }
        if restart_reasons.is_empty()
            && self
                .state
                .rke2_inputs
                .as_ref()
                .is_some_and(|last| *last != rke2_inputs)
        {
            restart_reasons.push("files an earlier run wrote but did not restart RKE2 for".into());
        }
        if mode == Mode::Apply {
            // Heard from early, while RKE2's first start takes its minutes; bounded so a
            // WireServer that does not answer delays the start by little.
            let mut early = cx.clone();
            early.wireserver_policy.deadline = cx.progress_report_deadline;
            azure_report::send(
                &early,
                &mut self.state,
                &Moment::BeforeStart,
                self.vm_id.as_deref(),
            )
            .await;
        }
        self.report
            .step(StartStep::new(
                cx,
                config.role.rke2_unit(),
                reload,
                restart_reasons,
                mode == Mode::Plan,
            ))
            .await?;

        Ok(Converged {
            config,
            token_version: token.version,
            rke2_inputs,
        })
    }

    /// Completes the report with the steps that did not run and, after `bootstrap`, records
    /// the run in the node state (a failed run keeps the last converged config and marker).
    fn finish(self, converged: Option<Converged>) -> RunReport {
        let Run {
            cx,
            state,
            report: Reporter { mode, mut report },
            started,
            started_at,
            vm_id: _,
        } = self;
        for step in StepId::ALL {
            if !report.steps.iter().any(|s| s.step == step) {
                report.push(StepReport::not_run(step));
            }
        }
        // In run order, whichever step stopped the run.
        report
            .steps
            .sort_by_key(|s| StepId::ALL.iter().position(|id| *id == s.step));
        report.duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        report.converged = !report.failed();
        report.usage = report::Usage::now();
        if mode == Mode::Plan {
            return report;
        }
        let mut next = state.clone();
        if let (Some(c), true) = (&converged, report.converged) {
            next.converged_at = Some(state::now_rfc3339());
            next.config_digest = Some(crate::config::digest(&c.config));
            if c.token_version.is_some() {
                next.join_token_version = c.token_version.clone();
            }
            // Converged means RKE2 was started or restarted for these inputs, or already had them.
            next.rke2_inputs = Some(c.rke2_inputs.clone());
            if let Err(e) = state::save_last_config(&cx.root, &c.config) {
                tracing::warn!(error = %format!("{e:#}"), "could not save the last converged config");
            }
        }
        next.last_run = Some(report.record(started_at));
        if let Err(e) = next.save(&cx.root) {
            tracing::warn!(error = %format!("{e:#}"), "could not save the node state");
        }
        report
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Root;

    #[test]
    fn a_step_whose_files_cannot_be_rendered_fails_in_run_order() {
        let dir = tempfile::tempdir().unwrap();
        let cx = Context::new(Root::new(dir.path()), "http://127.0.0.1:9".into());
        let mut run = Run {
            cx: &cx,
            state: NodeState::default(),
            report: Reporter {
                mode: Mode::Plan,
                report: RunReport::new(Mode::Plan),
            },
            started: Instant::now(),
            started_at: state::now_rfc3339(),
            vm_id: None,
        };
        let _: Stopped = run
            .report
            .fail(StepId::ServerManifests, anyhow::anyhow!("cannot render"));
        let report = run.finish(None);
        let names: Vec<&str> = report.steps.iter().map(|s| s.step.name()).collect();
        assert_eq!(names, super::super::STEP_NAMES);
        assert_eq!(
            report.first_failure().unwrap().step,
            StepId::ServerManifests
        );
        assert_eq!(report.exit_code(), StepId::ServerManifests.exit_code());
        assert!(report
            .failure_line()
            .unwrap()
            .starts_with("plan failed in step server-manifests: cannot render;"));
    }
}
