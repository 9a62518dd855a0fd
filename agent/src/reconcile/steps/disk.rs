//! Steps `data-disk` and `server-state-disk`: find the disk of the step's purpose, decide,
//! and format (only a blank disk), check, mount and persist it. The decision is the disk
//! module's; this step only schedules it. One step type for every [`Purpose`].

use crate::disk::{self, DecisionKind, DiskObservation, DiskOutcome, DiskSpec, Purpose};
use crate::reconcile::change::{Action, Change};
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use crate::systemd::Systemd;
use anyhow::{Context as _, Result};
use std::time::Duration;

/// How long systemd may take to mount a disk: the mount job includes waiting for
/// udev's `/dev/disk/by-uuid` link of a just-made filesystem (systemd's own device
/// timeout is 90 s).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DiskStep<'a> {
    cx: &'a Context,
    purpose: Purpose,
    cfg: Option<DiskSpec>,
    /// How long to wait for a late link; `None` is the config's `wait_seconds`.
    wait: Option<Duration>,
    observed: Option<DiskObservation>,
    outcome: Option<DiskOutcome>,
    /// `plan` found the mount unit missing and planned to write it.
    writes_unit: bool,
    planned: Vec<Change>,
}

/// What the step leaves for the later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskState {
    /// The disk is (or, after `plan`, would be) mounted at its mount point.
    pub mounted: bool,
    /// The mount unit or its wants link is (or would be) written: systemd must reload.
    pub units_changed: bool,
}

/// The step of each disk purpose.
pub const fn step_of(purpose: Purpose) -> StepId {
    match purpose {
        Purpose::LonghornData => StepId::DataDisk,
        Purpose::ServerState => StepId::ServerStateDisk,
    }
}

impl<'a> DiskStep<'a> {
    /// The step for the node's disk of `purpose` (skipped when it has none). `plan` passes a
    /// zero `wait`: it reports the disk as it is now instead of waiting.
    pub fn new(
        cx: &'a Context,
        config: &crate::config::NodeConfig,
        purpose: Purpose,
        wait: Option<Duration>,
    ) -> Self {
        DiskStep {
            cx,
            purpose,
            cfg: DiskSpec::of(config, purpose),
            wait,
            observed: None,
            outcome: None,
            writes_unit: false,
            planned: Vec::new(),
        }
    }

    fn change(&self, action: Action, target: String, detail: String) -> Change {
        Change {
            step: step_of(self.purpose),
            action,
            target,
            detail,
        }
    }
}

impl Step for DiskStep<'_> {
    type Output = DiskState;

    fn id(&self) -> StepId {
        step_of(self.purpose)
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        let Some(cfg) = &self.cfg else {
            return Ok(Vec::new());
        };
        let (cfg_owned, root) = (cfg.clone(), self.cx.root.clone());
        let wait = self.wait.unwrap_or(Duration::from_secs(cfg.wait_seconds));
        // Probing and waiting for a late link block: keep them off the async workers.
        let obs =
            tokio::task::spawn_blocking(move || disk::observe_within(&cfg_owned, &root, wait))
                .await
                .with_context(|| format!("the {} probe panicked", cfg.purpose.what()))??;
        let device = obs.device.display().to_string();
        let mount = cfg.mount_point.display().to_string();
        let mut changes = match obs.decision.kind {
            DecisionKind::Refuse => {
                return Err(anyhow::Error::new(disk::Refused {
                    device: obs.device.clone(),
                    reason: obs.decision.reason.clone(),
                }))
            }
            DecisionKind::Format => vec![
                self.change(
                    Action::Format,
                    device,
                    format!("ext4, label {}: {}", cfg.label, obs.decision.reason),
                ),
                self.change(Action::Mount, mount, String::new()),
            ],
            DecisionKind::Reuse => vec![self.change(
                Action::Mount,
                mount,
                format!("reuse: {}", obs.decision.reason),
            )],
            DecisionKind::Mounted => Vec::new(),
        };
        // The mount must also survive a reboot: its unit is part of the converged state.
        let unit =
            std::path::Path::new(disk::SYSTEMD_UNIT_DIR).join(disk::unit_name(&cfg.mount_point));
        self.writes_unit = !self.cx.root.join(&unit).exists();
        if self.writes_unit {
            changes.push(self.change(
                Action::Create,
                unit.display().to_string(),
                "persistent mount, nofail".into(),
            ));
        }
        self.observed = Some(obs);
        self.planned = changes.clone();
        Ok(changes)
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        let (Some(cfg), Some(obs)) = (&self.cfg, self.observed.clone()) else {
            return Ok(Vec::new());
        };
        let (cfg_owned, root) = (cfg.clone(), self.cx.root.clone());
        let (runtime, bus) = (
            tokio::runtime::Handle::current(),
            self.cx.dbus_address.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || {
            // On a node systemd mounts (the agent's own mount namespace is private); in a
            // `--root` sandbox the agent mounts under the sandbox itself.
            let start = |unit: &str| {
                runtime.block_on(async {
                    Systemd::connect(bus.as_deref())
                        .await?
                        .start_written_unit(unit, MOUNT_TIMEOUT)
                        .await
                })
            };
            let mounter = if root.is_host() {
                disk::Mounter::Systemd(&start)
            } else {
                disk::Mounter::Syscall
            };
            disk::apply(&obs, &cfg_owned, &root, &mounter)
        })
        .await
        .with_context(|| format!("the {} step panicked", self.purpose.what()))??;
        self.outcome = Some(outcome);
        Ok(self.planned.clone())
    }

    fn skipped(&self) -> bool {
        self.cfg.is_none()
    }

    fn output(self) -> Result<DiskState> {
        let would_mount = self.observed.as_ref().is_some_and(|o| {
            matches!(
                o.decision.kind,
                DecisionKind::Format | DecisionKind::Reuse | DecisionKind::Mounted
            )
        });
        Ok(DiskState {
            mounted: self.outcome.is_some() || would_mount,
            units_changed: self.writes_unit
                || self.outcome.as_ref().is_some_and(|o| o.persisted.changed()),
        })
    }
}
