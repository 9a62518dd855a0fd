//! RKE2's node password, kept on the node's persistent disk so that a replaced node (new
//! VM, new OS disk, same name, same disk) rejoins under its name with no manual step.
//!
//! RKE2 admits a node under an existing name only when it presents the password whose hash
//! the server keeps in the Secret `kube-system/<node>.node-password.rke2`; the node keeps it
//! in `/etc/rancher/node/password`, on the OS disk, which a replacement loses. The agent
//! keeps a root-only copy in `.canarie/node-password` on the disk that survives (the server
//! state disk on servers, else the Longhorn data disk) and puts it back before RKE2 starts.
//! docs/operations.md says why this rather than deleting the Secret server-side.
//!
//! [`decide`] is pure; the step (reconcile::steps::node_password) observes, decides, and
//! re-reads right before writing.

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};

/// Where RKE2 (k3s) reads the node password, and writes one it generated.
pub const NODE_PASSWORD: &str = "/etc/rancher/node/password";
/// The agent's directory on a persistent disk (mode 0700).
pub const SAVED_DIR: &str = ".canarie";
/// The saved copy, relative to the disk's mount point (mode 0600).
pub const SAVED_FILE: &str = ".canarie/node-password";
/// Both files are the node's credential towards the server: root only.
pub const MODE: u32 = 0o600;

/// What to do about the node password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Both copies agree: nothing to do.
    Keep,
    /// A replaced node: put the saved password back before RKE2 starts.
    Restore,
    /// A node whose password is not on its disk yet (its first run, or an older agent's
    /// node): save it there.
    Save,
    /// A first boot: neither exists, so the agent makes the password RKE2 would have made
    /// and writes both before RKE2 ever starts.
    Generate,
    /// The two differ: this node's RKE2 registered with its own copy, which wins; the disk's
    /// copy is replaced.
    Replace,
}

impl Action {
    /// Writes to the saved copy on the disk.
    pub fn writes_saved(self) -> bool {
        matches!(self, Action::Save | Action::Generate | Action::Replace)
    }

    /// Writes to `/etc/rancher/node/password`.
    pub fn writes_local(self) -> bool {
        matches!(self, Action::Restore | Action::Generate)
    }
}

/// The decision, from the two copies as read (RKE2 trims white space when it reads).
pub fn decide(local: Option<&SecretString>, saved: Option<&SecretString>) -> Action {
    let trimmed = |s: &SecretString| s.expose_secret().trim().to_string();
    match (local, saved) {
        (None, None) => Action::Generate,
        (None, Some(_)) => Action::Restore,
        (Some(_), None) => Action::Save,
        (Some(l), Some(s)) if trimmed(l) == trimmed(s) => Action::Keep,
        (Some(_), Some(_)) => Action::Replace,
    }
}

/// A new password as RKE2 makes one: 16 random bytes, hex, one line.
pub fn generate() -> SecretString {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let hex = hex::encode(bytes);
    bytes.fill(0);
    SecretString::from(format!("{hex}\n"))
}

/// The saved copy's node path on the disk mounted at `mount_point`.
pub fn saved_path(mount_point: &Path) -> PathBuf {
    mount_point.join(SAVED_FILE)
}

/// Reads a password file; `None` when it is missing or blank (RKE2 treats both alike).
pub fn read(path: &Path) -> anyhow::Result<Option<SecretString>> {
    use anyhow::Context as _;
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(SecretString::from(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_string())
    }

    #[test]
    fn every_pair_of_copies_has_one_action() {
        let (a, a_nl, b) = (s("abc"), s("abc\n"), s("def\n"));
        assert_eq!(decide(None, None), Action::Generate);
        assert_eq!(decide(None, Some(&a)), Action::Restore);
        assert_eq!(decide(Some(&a), None), Action::Save);
        assert_eq!(decide(Some(&a), Some(&a_nl)), Action::Keep);
        assert_eq!(decide(Some(&a), Some(&b)), Action::Replace);
        assert!(Action::Generate.writes_local() && Action::Generate.writes_saved());
        assert!(Action::Restore.writes_local() && !Action::Restore.writes_saved());
        assert!(!Action::Keep.writes_local() && !Action::Keep.writes_saved());
        assert!(!Action::Replace.writes_local() && Action::Replace.writes_saved());
    }

    #[test]
    fn generated_passwords_look_like_rke2s_and_differ() {
        let (a, b) = (generate(), generate());
        let text = a.expose_secret();
        assert_eq!(text.len(), 33, "32 hex digits and a newline");
        assert!(text.trim().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(text, b.expose_secret());
    }

    #[test]
    fn a_blank_file_counts_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("password");
        assert!(read(&p).unwrap().is_none());
        std::fs::write(&p, "\n").unwrap();
        assert!(read(&p).unwrap().is_none());
        std::fs::write(&p, "x\n").unwrap();
        assert_eq!(read(&p).unwrap().unwrap().expose_secret(), "x\n");
    }
}
