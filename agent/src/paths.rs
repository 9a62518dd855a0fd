//! Host paths, resolved under `--root` so tests can run the agent in a sandbox.

use std::path::{Path, PathBuf};

/// The filesystem root every host path is resolved under (`/` on a real node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Default for Root {
    fn default() -> Self {
        Root(PathBuf::from("/"))
    }
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// True on a real node, where host paths are used as they are.
    pub fn is_host(&self) -> bool {
        self.0 == Path::new("/")
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `path` (absolute, as on the node) under this root.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        let relative = path.strip_prefix("/").unwrap_or(path);
        self.0.join(relative)
    }
}

/// Where the agent keeps its node state.
pub const STATE_DIR: &str = "/var/lib/canarie-agent";
/// RKE2's main config file.
pub const RKE2_CONFIG: &str = "/etc/rancher/rke2/config.yaml";
/// The drop-in with the join token (mode 0600).
pub const RKE2_TOKEN_DROPIN: &str = "/etc/rancher/rke2/config.yaml.d/10-token.yaml";
/// RKE2's server state directory (etcd under `db/`, its snapshots under `db/snapshots`,
/// `tls/`, `token`, `cred/`): the server state disk's mount point.
pub const RKE2_SERVER_DIR: &str = "/var/lib/rancher/rke2/server";
/// Where RKE2's helm-controller picks up manifests on servers (on the state disk, when the
/// server has one: written after it is mounted).
pub const RKE2_MANIFESTS_DIR: &str = "/var/lib/rancher/rke2/server/manifests";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_live_in_the_server_state_directory() {
        assert!(Path::new(RKE2_MANIFESTS_DIR).starts_with(RKE2_SERVER_DIR));
    }

    #[test]
    fn join_keeps_paths_under_the_root() {
        let root = Root::new("/tmp/sandbox");
        assert_eq!(
            root.join("/etc/rancher/rke2/config.yaml"),
            PathBuf::from("/tmp/sandbox/etc/rancher/rke2/config.yaml")
        );
        assert_eq!(Root::default().join("/etc/x"), PathBuf::from("/etc/x"));
        assert!(Root::default().is_host());
        assert!(!root.is_host());
    }
}
