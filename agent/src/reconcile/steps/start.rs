//! Step `start-rke2`: the agent is the one owner that starts RKE2. The RKE2 units are not
//! enabled, so systemd never starts them on its own (no race with the agent rewriting their
//! config), and the agent's unit is not ordered `Before=` them (no deadlock while the agent
//! waits for a start job that takes minutes on a server's first boot).

use crate::reconcile::change::{Action, Change};
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use crate::systemd::Systemd;
use anyhow::{Context as _, Result};

pub struct StartStep<'a> {
    cx: &'a Context,
    unit: &'static str,
    /// Unit files or drop-ins changed: systemd must re-read them first.
    reload: bool,
    /// Files RKE2 reads at start changed: a running RKE2 must restart.
    restart_reasons: Vec<String>,
    /// `plan` without a reachable systemd (a sandbox): say what would happen instead of failing.
    tolerate_no_bus: bool,
    systemd: Option<Systemd>,
    planned: Vec<Change>,
}

impl<'a> StartStep<'a> {
    pub fn new(
        cx: &'a Context,
        unit: &'static str,
        reload: bool,
        restart_reasons: Vec<String>,
        tolerate_no_bus: bool,
    ) -> Self {
        StartStep {
            cx,
            unit,
            reload,
            restart_reasons,
            tolerate_no_bus,
            systemd: None,
            planned: Vec::new(),
        }
    }

    fn change(&self, action: Action, detail: String) -> Change {
        Change {
            step: StepId::StartRke2,
            action,
            target: self.unit.to_string(),
            detail,
        }
    }
}

impl Step for StartStep<'_> {
    type Output = ();

    fn id(&self) -> StepId {
        StepId::StartRke2
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        let reload = |detail: &str| Change {
            step: StepId::StartRke2,
            action: Action::Reload,
            target: "systemd".into(),
            detail: detail.into(),
        };
        if self.reload {
            changes.push(reload("unit files changed"));
        }
        // A sandbox must never drive the host's own systemd.
        let connected = if !self.cx.root.is_host() && self.cx.dbus_address.is_none() {
            Err(anyhow::anyhow!(
                "a --root sandbox needs --dbus-address: refusing to use the host's systemd"
            ))
        } else {
            Systemd::connect(self.cx.dbus_address.as_deref()).await
        };
        let state = match connected {
            Ok(sd) => {
                let state = sd.unit_state(self.unit).await?;
                self.systemd = Some(sd);
                state
            }
            Err(e) if self.tolerate_no_bus => {
                changes.push(self.change(
                    Action::Start,
                    format!("if not running; systemd unreachable: {e:#}"),
                ));
                self.planned = changes.clone();
                return Ok(changes);
            }
            Err(e) => return Err(e),
        };
        // A run stopped between writing a drop-in and reloading leaves nothing to rewrite:
        // systemd itself says it has not read the unit's files.
        if !self.reload && state.need_daemon_reload {
            changes.push(reload("systemd has not read the unit's changed files"));
        }
        if !state.is_active() {
            changes.push(self.change(Action::Start, format!("now {state}")));
        } else if !self.restart_reasons.is_empty() {
            changes.push(self.change(
                Action::Restart,
                format!("changed: {}", self.restart_reasons.join(", ")),
            ));
        }
        self.planned = changes.clone();
        Ok(changes)
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        let sd = self
            .systemd
            .as_ref()
            .context("systemd was not reached while planning")?;
        for change in &self.planned {
            match change.action {
                Action::Reload => sd.reload().await?,
                Action::Start => {
                    sd.start_and_wait(self.unit, self.cx.rke2_start_timeout)
                        .await?
                }
                Action::Restart => {
                    sd.restart_and_wait(self.unit, self.cx.rke2_start_timeout)
                        .await?
                }
                _ => {}
            }
        }
        Ok(self.planned.clone())
    }

    fn output(self) -> Result<()> {
        Ok(())
    }
}
