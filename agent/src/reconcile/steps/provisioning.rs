//! Step `provisioning`: what Azure's platform provisioning does on a new VM (admin user,
//! its SSH keys, hostname, SSH host keys, sshd key login only, root filesystem grown),
//! from IMDS instance
//! metadata, converged on every boot (`crate::provision`).
//!
//! Skipped when cloud-init provisions the node (an image baked with `--provisioning
//! cloud-init`): two provisioners must not fight over the same user and hostname.

use crate::provision::{self, Decision, Desired, HostnameTarget, Observed, Task};
use crate::reconcile::change::{Action, Change};
use crate::reconcile::state::NodeState;
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use anyhow::{Context as _, Result};

pub struct ProvisioningStep<'a> {
    cx: &'a Context,
    may_fall_back: bool,
    hostname: HostnameTarget,
    desired: Option<Desired>,
    vm_id: Option<String>,
    skip: Option<String>,
    warning: Option<String>,
}

/// What later steps and the run's reports need.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// `compute.vmId`, for the KVP report; `None` when IMDS was not read.
    pub vm_id: Option<String>,
}

impl<'a> ProvisioningStep<'a> {
    pub fn new(cx: &'a Context, state: &NodeState) -> Self {
        let hostname = if cx.root.is_host() {
            HostnameTarget::Hostnamed(cx.dbus_address.clone())
        } else {
            HostnameTarget::File
        };
        ProvisioningStep::with_hostname(cx, state, hostname)
    }

    /// With the hostname read and set through `hostname` (tests: a test hostnamed).
    pub fn with_hostname(cx: &'a Context, state: &NodeState, hostname: HostnameTarget) -> Self {
        ProvisioningStep {
            cx,
            may_fall_back: state.has_converged(),
            hostname,
            desired: None,
            vm_id: None,
            skip: None,
            warning: None,
        }
    }

    async fn observe_and_decide(&self, desired: &Desired) -> Result<(Observed, Decision)> {
        let seen = provision::observe(&self.cx.root, desired, &self.hostname)
            .await
            .context("observing the node's provisioning")?;
        let decision = provision::decide(desired, &seen)?;
        Ok((seen, decision))
    }
}

fn change(task: &Task, desired: &Desired) -> Change {
    let (action, target, detail) = match task {
        Task::CreateUser { groups } => (
            Action::Create,
            format!("user {}", desired.user),
            format!("password locked, groups {}", groups.join(",")),
        ),
        Task::CreateHome => (
            Action::Create,
            provision::default_home(&desired.user).display().to_string(),
            format!("mode {:04o}, from /etc/skel", provision::HOME_MODE),
        ),
        Task::AddToGroups(groups) => (
            Action::Update,
            format!("user {}", desired.user),
            format!("add to groups {}", groups.join(",")),
        ),
        Task::LockPassword => (
            Action::Update,
            format!("user {}", desired.user),
            "lock the password".into(),
        ),
        Task::WriteSudoers => (
            Action::Update,
            provision::SUDOERS_DROPIN.into(),
            format!("mode {:04o}, NOPASSWD sudo", provision::SUDOERS_MODE),
        ),
        Task::WriteKeys(path) => (
            Action::Update,
            path.display().to_string(),
            format!(
                "{} key(s) from IMDS, mode {:04o}, owned by {}",
                desired.keys[path].lines().count(),
                provision::KEYS_MODE,
                desired.user
            ),
        ),
        Task::SetHostname => (Action::Update, "hostname".into(), desired.hostname.clone()),
        Task::GenerateHostKeys(types) => (Action::Create, "SSH host keys".into(), types.join(",")),
        Task::WriteSshdConfig => (
            Action::Update,
            provision::sshd::DROPIN.into(),
            format!(
                "mode {:04o}, key login only (no password, no keyboard-interactive)",
                provision::sshd::DROPIN_MODE
            ),
        ),
        Task::Grow(provision::grow::Grow::Partition) => (
            Action::Update,
            "root partition".into(),
            "grow to the end of the OS disk".into(),
        ),
        Task::Grow(provision::grow::Grow::Filesystem) => (
            Action::Update,
            "root filesystem".into(),
            "grow to its partition (online)".into(),
        ),
    };
    Change {
        step: StepId::Provisioning,
        action,
        target,
        detail,
    }
}

impl Step for ProvisioningStep<'_> {
    type Output = Provisioned;

    fn id(&self) -> StepId {
        StepId::Provisioning
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        if let Some(why) = provision::cloud_init_provisions(&self.cx.root) {
            let why = format!("{why}: step skipped");
            tracing::info!(step = StepId::Provisioning.name(), "{why}");
            self.skip = Some(why);
            return Ok(Vec::new());
        }
        let imds = self.cx.imds(self.may_fall_back)?;
        let compute = match imds.instance().await {
            Ok(meta) => meta.compute,
            // Provisioned on an earlier boot: what it made stays; converge when IMDS is back.
            Err(e) if self.may_fall_back => {
                self.warning = Some(format!(
                    "IMDS unreachable, provisioning left as an earlier run made it: {e:#}"
                ));
                self.skip = self.warning.clone();
                return Ok(Vec::new());
            }
            Err(e) => return Err(e).context("reading the VM's instance metadata from IMDS"),
        };
        self.vm_id = Some(compute.vm_id.clone()).filter(|id| !id.is_empty());
        let desired = Desired::from_metadata(&compute)?;
        if desired.password_login_requested {
            tracing::warn!(
                step = StepId::Provisioning.name(),
                "IMDS compute.osProfile.disablePasswordAuthentication is false, but password provisioning \
                 is not supported (the password is not in IMDS): key login only"
            );
        }
        let (_, decision) = self.observe_and_decide(&desired).await?;
        for note in &decision.notes {
            tracing::info!(step = StepId::Provisioning.name(), note = %note, "left alone");
        }
        let changes = decision.tasks.iter().map(|t| change(t, &desired)).collect();
        self.desired = Some(desired);
        Ok(changes)
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        let desired = self
            .desired
            .clone()
            .context("the provisioning step applied without a plan")?;
        let mut done = Vec::new();
        let mut applied = Vec::new();
        // Re-decided right before each action: an account made by the first task is seen
        // by the key files, a grown partition by the filesystem's resize.
        let mut rounds = 0;
        loop {
            let (seen, decision) = self.observe_and_decide(&desired).await?;
            let Some(task) = decision.tasks.first() else {
                break;
            };
            rounds += 1;
            anyhow::ensure!(
                rounds <= 16 && !done.contains(&change(task, &desired)),
                "provisioning does not converge: {} is still needed after it was done",
                change(task, &desired)
            );
            provision::apply(&self.cx.root, &desired, &seen, &self.hostname, task)
                .await
                .with_context(|| format!("provisioning: {}", change(task, &desired)))?;
            applied.push(task.clone());
            done.push(change(task, &desired));
        }
        // A running node's sshd learns about a new drop-in or new host keys; a `--root`
        // sandbox has no sshd of its own. sshd is not what the cluster needs: a failure
        // here is the step's warning, not the run's failure.
        if self.cx.root.is_host() {
            let did = |t: fn(&Task) -> bool| applied.iter().any(t);
            let config_changed = did(|t| matches!(t, Task::WriteSshdConfig));
            let keys_made = did(|t| matches!(t, Task::GenerateHostKeys(_)));
            match provision::sshd::tell_service(
                self.cx.dbus_address.as_deref(),
                config_changed,
                keys_made,
            )
            .await
            {
                Ok(lines) => lines
                    .iter()
                    .for_each(|l| tracing::info!(step = StepId::Provisioning.name(), "{l}")),
                Err(e) => {
                    self.warning = Some(format!(
                        "{} was not told about the provisioning's changes: {e:#}",
                        provision::sshd::SERVICE
                    ))
                }
            }
        }
        Ok(done)
    }

    fn warning(&self) -> Option<String> {
        self.warning.clone()
    }

    fn skipped(&self) -> bool {
        self.skip.is_some()
    }

    fn output(self) -> Result<Provisioned> {
        Ok(Provisioned { vm_id: self.vm_id })
    }
}
