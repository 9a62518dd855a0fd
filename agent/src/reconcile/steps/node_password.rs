//! Step `node-password`: RKE2's node password restored from, or saved to, the node's
//! persistent disk before RKE2 starts (see [`crate::node_password`]). Skipped on a node
//! without a persistent disk: there the password lives on the OS disk only.

use crate::config::NodeConfig;
use crate::disk::{DiskSpec, Purpose};
use crate::node_password::{self as np, Action as PwAction};
use crate::nodefile::{Effect, SecretFile};
use crate::reconcile::change::{Action, Change};
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use anyhow::{bail, Context as _, Result};
use secrecy::SecretString;
use std::path::{Path, PathBuf};

pub struct NodePasswordStep<'a> {
    cx: &'a Context,
    /// The disk that keeps the copy, when the node has one and it is mounted.
    disk: Option<DiskSpec>,
    warning: Option<String>,
    decided: Option<PwAction>,
    planned: Vec<Change>,
}

/// The disk that keeps the node password: the server state disk, else the Longhorn disk.
pub fn keeping_disk(config: &NodeConfig) -> Option<DiskSpec> {
    DiskSpec::of(config, Purpose::ServerState)
        .or_else(|| DiskSpec::of(config, Purpose::LonghornData))
}

impl<'a> NodePasswordStep<'a> {
    /// `mounted`: the keeping disk is mounted (after `plan` of a blank disk it is not yet).
    pub fn new(cx: &'a Context, config: &NodeConfig, mounted: bool) -> Self {
        let disk = keeping_disk(config);
        let warning = match (&disk, mounted) {
            (Some(d), false) => Some(format!(
                "the {} is not mounted yet: bootstrap restores or saves the node password once it is",
                d.purpose.what()
            )),
            _ => None,
        };
        NodePasswordStep {
            cx,
            disk: disk.filter(|_| mounted),
            warning,
            decided: None,
            planned: Vec::new(),
        }
    }

    fn saved(&self, disk: &DiskSpec) -> PathBuf {
        np::saved_path(&disk.mount_point)
    }

    /// Both copies as they are now.
    fn observe(&self, disk: &DiskSpec) -> Result<(Option<SecretString>, Option<SecretString>)> {
        let root = &self.cx.root;
        let local = np::read(&root.join(np::NODE_PASSWORD))?;
        let saved = np::read(&root.join(self.saved(disk)))?;
        Ok((local, saved))
    }

    fn change(&self, path: &Path, detail: &str) -> Change {
        Change {
            step: StepId::NodePassword,
            action: Action::Create,
            target: path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

impl Step for NodePasswordStep<'_> {
    type Output = ();

    fn id(&self) -> StepId {
        StepId::NodePassword
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        let Some(disk) = self.disk.clone() else {
            return Ok(Vec::new());
        };
        let (local, saved) = self.observe(&disk)?;
        let action = np::decide(local.as_ref(), saved.as_ref());
        let what = disk.purpose.what();
        let saved_path = self.saved(&disk);
        let local_path = Path::new(np::NODE_PASSWORD);
        let changes = match action {
            PwAction::Keep => Vec::new(),
            PwAction::Restore => vec![self.change(
                local_path,
                &format!("restored from the {what}: this node rejoins under its name"),
            )],
            PwAction::Save => vec![self.change(&saved_path, &format!("saved on the {what}"))],
            PwAction::Generate => vec![
                self.change(local_path, "a new node password"),
                self.change(&saved_path, &format!("saved on the {what}")),
            ],
            PwAction::Replace => vec![self.change(
                &saved_path,
                &format!("the copy on the {what} differs from this node's own, which RKE2 registered with"),
            )],
        };
        self.decided = Some(action);
        self.planned = changes.clone();
        Ok(changes)
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        let (Some(disk), Some(decided)) = (self.disk.clone(), self.decided) else {
            return Ok(Vec::new());
        };
        // Re-decided right before writing: a copy that appeared since plan is never overwritten
        // by a stale decision.
        let (local, saved) = self.observe(&disk)?;
        let now = np::decide(local.as_ref(), saved.as_ref());
        if now != decided {
            bail!("the node password files changed since they were read (then: {decided:?}, now: {now:?}); run again");
        }
        let password = match (now, local, saved) {
            (PwAction::Restore, _, Some(saved)) => saved,
            (PwAction::Generate, _, _) => np::generate(),
            (_, Some(local), _) => local,
            _ => return Ok(Vec::new()),
        };
        let root = &self.cx.root;
        if now.writes_saved() {
            let dir = root.join(disk.mount_point.join(np::SAVED_DIR));
            crate::fsutil::create_dirs(&dir)?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .with_context(|| format!("making {} root-only", dir.display()))?;
            SecretFile::new(
                self.saved(&disk),
                password.clone(),
                np::MODE,
                Effect::RestartRke2,
            )
            .write(root)
            .with_context(|| format!("saving the node password on the {}", disk.purpose.what()))?;
        }
        if now.writes_local() {
            SecretFile::new(
                np::NODE_PASSWORD.into(),
                password,
                np::MODE,
                Effect::RestartRke2,
            )
            .write(root)
            .context("writing RKE2's node password")?;
        }
        tracing::info!(step = StepId::NodePassword.name(), action = ?now, disk = disk.purpose.key(), "node password in place");
        Ok(self.planned.clone())
    }

    fn warning(&self) -> Option<String> {
        self.warning.clone()
    }

    fn skipped(&self) -> bool {
        self.disk.is_none()
    }

    fn output(self) -> Result<()> {
        Ok(())
    }
}
