//! What a step would change (plan) or did change (bootstrap).

use crate::fsutil;
use crate::paths::Root;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
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
    pub step: &'static str,
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
    step: &'static str,
    root: &Root,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<Option<Change>> {
    let host_path = root.join(path);
    if fsutil::is_current(&host_path, contents, mode)? {
        return Ok(None);
    }
    let action = if host_path.exists() {
        Action::Update
    } else {
        Action::Create
    };
    Ok(Some(Change {
        step,
        action,
        target: path.display().to_string(),
        detail: format!("mode {mode:04o}"),
    }))
}
