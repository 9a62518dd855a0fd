//! Files the agent puts on the node: what a file must hold ([`RenderedFile`], or
//! [`SecretFile`] for one holding a secret), what it owns by name ([`OwnedFile`]), what a
//! change of either needs to take effect ([`Effect`]), and how they are compared, written
//! and removed under a [`Root`].
//!
//! Renderers (`rke2`, and any step that writes its own files) produce these; the reconciler's
//! steps write and remove them. Nothing here knows which program reads a file. Writing goes
//! through [`fsutil::write_if_changed`], so an unchanged file is never rewritten and a 0600
//! file is 0600 from its first byte.

use crate::fsutil::{self, WriteOutcome};
use crate::paths::Root;
use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};

/// What must happen for a changed (or removed) file to take effect. A new kind of file with
/// a new consequence (a sysctl drop-in: `sysctl --system`) adds a variant here and the step
/// that acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// RKE2 reads it at start: restart (or first start) the role's RKE2 unit.
    RestartRke2,
    /// A systemd unit drop-in: `daemon-reload` before RKE2 is (re)started.
    DaemonReload,
    /// RKE2's deploy controller applies it on change; nothing to do.
    AppliedByRke2,
}

/// How a node file compares with what it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Contents and mode are right.
    Current,
    Missing,
    /// There, with other contents or another mode.
    Differs,
}

/// How the node file `path` (under `root`) compares with `contents` and `mode`.
pub fn drift(root: &Root, path: &Path, contents: &[u8], mode: u32) -> Result<Drift> {
    let host_path = root.join(path);
    Ok(if fsutil::is_current(&host_path, contents, mode)? {
        Drift::Current
    } else if host_path.exists() {
        Drift::Differs
    } else {
        Drift::Missing
    })
}

/// True when the node has a file at `path` (under `root`) that a removal would take away. A
/// directory of that name is not the agent's and does not count.
pub fn present(root: &Root, path: &Path) -> Result<bool> {
    let host_path = root.join(path);
    match std::fs::symlink_metadata(&host_path) {
        Ok(meta) => Ok(!meta.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading metadata of {}", host_path.display())),
    }
}

/// Removes the node file `path` (under `root`), one the agent owns by name and the config
/// no longer wants; the removal is fsynced.
pub fn remove(root: &Root, path: &Path) -> Result<()> {
    fsutil::remove_if_exists(&root.join(path))
        .with_context(|| format!("removing {} (no longer in the node config)", path.display()))?;
    Ok(())
}

/// One file as it must be on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the node (resolve with [`Root::join`]).
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub effect: Effect,
}

impl RenderedFile {
    /// True when the file under `root` already has these contents and mode.
    pub fn is_current(&self, root: &Root) -> Result<bool> {
        fsutil::is_current(&root.join(&self.path), &self.contents, self.mode)
    }

    pub fn drift(&self, root: &Root) -> Result<Drift> {
        drift(root, &self.path, &self.contents, self.mode)
    }

    /// Writes the file under `root` unless it is already current.
    pub fn write(&self, root: &Root) -> Result<WriteOutcome> {
        fsutil::write_if_changed(&root.join(&self.path), &self.contents, self.mode)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// A file the agent may write on some node, and what its removal needs (the same as a change
/// of it: see [`Effect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFile {
    pub path: PathBuf,
    pub effect: Effect,
}

/// A file holding a secret: its contents never appear in `Debug` output and are zeroed when
/// dropped.
pub struct SecretFile {
    pub path: PathBuf,
    contents: SecretString,
    pub mode: u32,
    pub effect: Effect,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .field("contents", &"[REDACTED]")
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("effect", &self.effect)
            .finish()
    }
}

impl SecretFile {
    pub fn new(path: PathBuf, contents: SecretString, mode: u32, effect: Effect) -> Self {
        SecretFile {
            path,
            contents,
            mode,
            effect,
        }
    }

    /// The contents, for writing. Never log them.
    pub fn expose_contents(&self) -> &[u8] {
        self.contents.expose_secret().as_bytes()
    }

    pub fn is_current(&self, root: &Root) -> Result<bool> {
        fsutil::is_current(&root.join(&self.path), self.expose_contents(), self.mode)
    }

    pub fn drift(&self, root: &Root) -> Result<Drift> {
        drift(root, &self.path, self.expose_contents(), self.mode)
    }

    /// Writes the file under `root` unless it is already current; it is created with its
    /// final mode, so the secret is never readable by others, not even briefly.
    pub fn write(&self, root: &Root) -> Result<WriteOutcome> {
        fsutil::write_if_changed(&root.join(&self.path), self.expose_contents(), self.mode)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn drift_presence_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let file = RenderedFile {
            path: "/etc/x/a.conf".into(),
            contents: b"a\n".to_vec(),
            mode: 0o644,
            effect: Effect::DaemonReload,
        };
        assert_eq!(file.drift(&root).unwrap(), Drift::Missing);
        assert!(!present(&root, &file.path).unwrap());
        file.write(&root).unwrap();
        assert_eq!(file.drift(&root).unwrap(), Drift::Current);
        fs::write(root.join(&file.path), b"b\n").unwrap();
        assert_eq!(file.drift(&root).unwrap(), Drift::Differs);
        assert!(present(&root, &file.path).unwrap());
        remove(&root, &file.path).unwrap();
        assert!(!present(&root, &file.path).unwrap());
        fs::create_dir(root.join(&file.path)).unwrap();
        assert!(
            !present(&root, &file.path).unwrap(),
            "a directory is not ours"
        );
    }
}
