//! What a step would change (plan) or did change (bootstrap).

use super::steps::StepId;
use crate::nodefile::{self, Drift};
use crate::paths::Root;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// A file the agent owns that the node config no longer wants.
    Remove,
    Format,
    Mount,
    Start,
    Restart,
    Reload,
    Record,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Remove => "remove",
            Action::Format => "format",
            Action::Mount => "mount",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::Record => "record",
        };
        f.pad(s)
    }
}

/// One change to the node, named by step and target (a path, a device, a unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub step: StepId,
    pub action: Action,
    pub target: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<8} {}", self.action, self.target)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// The change needed to make the node file `path` (under `root`) hold `contents` with `mode`.
pub fn file_change(
    step: StepId,
    root: &Root,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<Option<Change>> {
    let action = match nodefile::drift(root, path, contents, mode)? {
        Drift::Current => return Ok(None),
        Drift::Missing => Action::Create,
        Drift::Differs => Action::Update,
    };
    Ok(Some(Change {
        step,
        action,
        target: path.display().to_string(),
        detail: format!("mode {mode:04o}"),
    }))
}

/// The change removing the node file `path` (under `root`): `None` when there is no file
/// there. Only for files the calling step owns by name and the config no longer renders
/// (removed with [`nodefile::remove`]); a directory of that name is not the agent's and is
/// left alone.
pub fn removal(step: StepId, root: &Root, path: &Path, detail: &str) -> Result<Option<Change>> {
    Ok(nodefile::present(root, path)?.then(|| Change {
        step,
        action: Action::Remove,
        target: path.display().to_string(),
        detail: detail.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn removal_is_planned_only_for_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let path = Path::new("/etc/x/owned.yaml");
        assert_eq!(
            removal(StepId::Rke2Config, &root, path, "gone").unwrap(),
            None
        );
        fs::create_dir_all(root.join("/etc/x")).unwrap();
        fs::write(root.join(path), b"a").unwrap();
        let change = removal(StepId::Rke2Config, &root, path, "gone")
            .unwrap()
            .unwrap();
        assert_eq!(change.action, Action::Remove);
        assert_eq!(change.to_string(), "remove   /etc/x/owned.yaml (gone)");
        nodefile::remove(&root, path).unwrap();
        assert!(!root.join(path).exists());
        assert_eq!(
            removal(StepId::Rke2Config, &root, path, "gone").unwrap(),
            None
        );
        // A directory under an owned name is someone else's.
        fs::create_dir(root.join(path)).unwrap();
        assert_eq!(
            removal(StepId::Rke2Config, &root, path, "gone").unwrap(),
            None
        );
    }

    #[test]
    fn remove_serializes_as_snake_case() {
        assert_eq!(
            serde_json::to_string(&Action::Remove).unwrap(),
            "\"remove\""
        );
    }
}
