//! A step that puts files on the node (`rke2-config`, `server-manifests`, and any step whose
//! work is files): rendered files written only when their content or mode differs, and files
//! the agent owns that the config no longer renders removed.
//!
//! Ownership is by name, not by recorded state: the step is given every file the agent can
//! ever write in its directories (for RKE2's, [`crate::rke2::owned_config_files`] and
//! [`crate::rke2::owned_manifests`]), so a file left by an earlier config
//! is found even when the node state is lost, and a file the agent never names (an operator's
//! manifest or drop-in beside ours) is never touched.

use crate::nodefile::{self, Effect, OwnedFile, RenderedFile};
use crate::reconcile::change::{self, file_change, Change};
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub struct FilesStep<'a> {
    id: StepId,
    cx: &'a Context,
    files: Vec<RenderedFile>,
    owned: Vec<OwnedFile>,
    /// The files `plan` found out of date.
    stale: Vec<RenderedFile>,
    /// The owned files `plan` found on the node that the config no longer renders.
    unwanted: Vec<OwnedFile>,
    planned: Vec<Change>,
}

impl<'a> FilesStep<'a> {
    /// `files`: what the config renders; `owned`: every file this step may write for any
    /// config (a superset of the paths in `files`).
    pub fn new(
        id: StepId,
        cx: &'a Context,
        files: Vec<RenderedFile>,
        owned: Vec<OwnedFile>,
    ) -> Self {
        FilesStep {
            id,
            cx,
            files,
            owned,
            stale: Vec::new(),
            unwanted: Vec::new(),
            planned: Vec::new(),
        }
    }

    /// What the planned writes and removals need to take effect: a removed file needs what a
    /// changed one does (RKE2 must stop reading a removed config file, systemd forget a
    /// removed drop-in).
    fn effects(&self) -> impl Iterator<Item = (&Path, Effect)> + Clone {
        let written = self.stale.iter().map(|f| (f.path.as_path(), f.effect));
        let removed = self.unwanted.iter().map(|f| (f.path.as_path(), f.effect));
        written.chain(removed)
    }
}

/// Why a file is removed, as `plan` shows it.
fn removal_detail(effect: Effect) -> &'static str {
    match effect {
        // RKE2's deploy controller does not delete what a removed manifest applied.
        Effect::AppliedByRke2 => {
            "no longer in the node config; the objects it applied stay in the cluster (docs/operations.md)"
        }
        Effect::RestartRke2 | Effect::DaemonReload => "no longer in the node config",
    }
}

impl Step for FilesStep<'_> {
    /// Each file written or removed (or, in `plan`, to be), with what it needs to take effect.
    type Output = Vec<(PathBuf, Effect)>;

    fn id(&self) -> StepId {
        self.id
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        self.planned.clear();
        self.stale.clear();
        self.unwanted.clear();
        for file in &self.files {
            if let Some(change) = file_change(
                self.id,
                &self.cx.root,
                &file.path,
                &file.contents,
                file.mode,
            )? {
                self.planned.push(change);
                self.stale.push(file.clone());
            }
        }
        let wanted = |path: &Path| self.files.iter().any(|f| f.path == path);
        for owned in self.owned.iter().filter(|o| !wanted(&o.path)) {
            let detail = removal_detail(owned.effect);
            if let Some(change) = change::removal(self.id, &self.cx.root, &owned.path, detail)? {
                self.planned.push(change);
                self.unwanted.push(owned.clone());
            }
        }
        Ok(self.planned.clone())
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        for file in &self.stale {
            file.write(&self.cx.root)?;
        }
        for file in &self.unwanted {
            nodefile::remove(&self.cx.root, &file.path)?;
        }
        Ok(self.planned.clone())
    }

    fn skipped(&self) -> bool {
        self.files.is_empty() && self.unwanted.is_empty()
    }

    fn output(self) -> Result<Self::Output> {
        Ok(self
            .effects()
            .map(|(path, effect)| (path.to_path_buf(), effect))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Root;
    use crate::reconcile::change::Action;
    use std::fs;
    use std::path::PathBuf;

    fn rendered(path: &str, effect: Effect) -> RenderedFile {
        RenderedFile {
            path: path.into(),
            contents: b"a: 1\n".to_vec(),
            mode: 0o600,
            effect,
        }
    }

    fn owned(path: &str, effect: Effect) -> OwnedFile {
        OwnedFile {
            path: path.into(),
            effect,
        }
    }

    #[tokio::test]
    async fn removes_only_owned_files_the_config_no_longer_renders() {
        let dir = tempfile::tempdir().unwrap();
        let cx = Context::new(Root::new(dir.path()), "http://127.0.0.1:9".into());
        let put = |p: &str| {
            let host = cx.root.join(p);
            fs::create_dir_all(host.parent().unwrap()).unwrap();
            fs::write(host, b"old\n").unwrap();
        };
        put("/d/kept.yaml");
        put("/d/dropped.conf");
        put("/d/operator.conf");
        let files = vec![rendered("/d/kept.yaml", Effect::RestartRke2)];
        let owned_files = vec![
            owned("/d/kept.yaml", Effect::RestartRke2),
            owned("/d/dropped.conf", Effect::DaemonReload),
            owned("/d/never-written.yaml", Effect::AppliedByRke2),
        ];
        let mut step = FilesStep::new(StepId::Rke2Config, &cx, files, owned_files);

        let planned = step.plan().await.unwrap();
        let summary: Vec<_> = planned
            .iter()
            .map(|c| (c.action, c.target.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (Action::Update, "/d/kept.yaml"),
                (Action::Remove, "/d/dropped.conf")
            ]
        );
        let effects: Vec<(PathBuf, Effect)> =
            step.effects().map(|(p, e)| (p.to_path_buf(), e)).collect();
        assert_eq!(
            effects,
            [
                ("/d/kept.yaml".into(), Effect::RestartRke2),
                ("/d/dropped.conf".into(), Effect::DaemonReload)
            ]
        );
        assert!(!step.skipped());

        step.apply().await.unwrap();
        assert!(!cx.root.join("/d/dropped.conf").exists());
        assert_eq!(fs::read(cx.root.join("/d/kept.yaml")).unwrap(), b"a: 1\n");
        assert_eq!(
            fs::read(cx.root.join("/d/operator.conf")).unwrap(),
            b"old\n",
            "a file the step does not own is never touched"
        );
        assert!(step.plan().await.unwrap().is_empty(), "converged");
    }

    #[tokio::test]
    async fn a_step_with_nothing_rendered_still_removes_what_it_owns() {
        let dir = tempfile::tempdir().unwrap();
        let cx = Context::new(Root::new(dir.path()), "http://127.0.0.1:9".into());
        let path = "/m/canarie-gitrepo.yaml";
        fs::create_dir_all(cx.root.join("/m")).unwrap();
        fs::write(cx.root.join(path), b"old\n").unwrap();
        let mut step = FilesStep::new(
            StepId::ServerManifests,
            &cx,
            Vec::new(),
            vec![owned(path, Effect::AppliedByRke2)],
        );
        let planned = step.plan().await.unwrap();
        assert_eq!(planned.len(), 1);
        assert!(
            planned[0].detail.contains("stay in the cluster"),
            "{}",
            planned[0].detail
        );
        assert!(!step.skipped(), "a removal is reported, not skipped");
        step.apply().await.unwrap();
        assert!(step.plan().await.unwrap().is_empty());
        assert!(step.skipped());
    }
}
