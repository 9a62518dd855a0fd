//! RKE2's config.yaml, drop-ins, the Cilium HelmChartConfig and the seeded manifests.
//!
//! Rendering is pure: [`render`] and [`render_token_dropin`] turn the node config (and what
//! the agent observed about the node) into [`crate::nodefile`] files with their node paths,
//! modes and effects. Writing is the node files' own ([`RenderedFile::write`],
//! [`SecretFile::write`]), so an unchanged file is never rewritten (RKE2's helm-controller
//! re-applies a manifest whose file changed) and the token file is 0600 from its first byte.
//! docs/rke2-and-manifests.md lists every file and where each value lives.

mod cluster_values;
mod manifests;
mod node_config;
pub mod secrets;
mod yaml;

#[cfg(test)]
mod tests;

pub use crate::config::LONGHORN_DEFAULT_DISK_LABEL;
pub use manifests::{longhorn_replicas, FLEET_BUNDLE_PATHS};
pub use node_config::{
    AGENT_KEYS, ETCD_SNAPSHOT_RETENTION, ETCD_SNAPSHOT_SCHEDULE_CRON, SERVER_KEYS,
    WRITE_KUBECONFIG_MODE,
};
pub use secrets::{declared as declared_cluster_secrets, render_cluster_secrets};

use crate::config::{NodeConfig, Role};
use crate::disk::{DiskSpec, Purpose};
use crate::nodefile::{Effect, OwnedFile, RenderedFile, SecretFile};
use crate::paths::{RKE2_CONFIG, RKE2_MANIFESTS_DIR, RKE2_TOKEN_DROPIN};
use anyhow::{Context, Result};
use secrecy::SecretString;
use std::path::{Path, PathBuf};

/// The RKE2 release this agent renders for: its flag list (config keys), its bundled charts
/// (rke2-cilium, rke2-traefik values) and its helm-controller (manifest fields). The VM
/// image should carry this release; `doctor` warns when the node's differs. Pinned here only
/// (docs/lifecycle.md; the Vagrantfile and the tests check against it).
pub const RKE2_VERSION: &str = "v1.36.3+rke2r1";

/// The Pod Security Admission config (servers), named so it never collides with the
/// rke2-pss.yaml RKE2 writes when no config is given.
pub const PSA_CONFIG: &str = "/etc/rancher/rke2/canarie-pss.yaml";

/// Nothing under /etc/rancher or /var/lib/rancher is for anyone but root.
const CONFIG_MODE: u32 = 0o600;
const MANIFEST_MODE: u32 = 0o600;
/// Unit files are world-readable, like every other file systemd loads.
const UNIT_DROPIN_MODE: u32 = 0o644;
const TOKEN_MODE: u32 = 0o600;

/// The PSA config, compiled in from its one source.
const PSA_SOURCE: &str = include_str!("pod-security-admission.yaml");

/// The token drop-in's value in `render` output: never the real token.
pub const TOKEN_PLACEHOLDER: &str =
    "REDACTED: the join token from Key Vault (join_token.vault / join_token.secret)";

/// What the agent observed about the node, as far as rendering depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The data disk is mounted at `data_disk.mount_point`: the node may carry Longhorn's
    /// default-disk label (otherwise Longhorn would put replicas on the OS disk).
    pub data_disk_mounted: bool,
}

/// Every file the node needs besides the token drop-in, in write order: the config files
/// ([`render_config_files`]), then the manifests ([`render_manifests`]).
pub fn render(config: &NodeConfig, facts: &NodeFacts) -> Result<Vec<RenderedFile>> {
    let mut files = render_config_files(config, facts)?;
    files.extend(render_manifests(config)?);
    Ok(files)
}

/// RKE2's config files, in write order: config.yaml; on servers the PSA config; the RKE2
/// unit's drop-in for each disk the node has (data disk, server state disk).
pub fn render_config_files(config: &NodeConfig, facts: &NodeFacts) -> Result<Vec<RenderedFile>> {
    let mut files = Vec::new();
    let body = node_config::config_yaml(config, facts).context("rendering config.yaml")?;
    files.push(RenderedFile {
        path: RKE2_CONFIG.into(),
        contents: with_header(
            "# Written by canarie-agent from the node config; changes made here are overwritten.\n\
             # The join token is in config.yaml.d/10-token.yaml.\n",
            &body,
        ),
        mode: CONFIG_MODE,
        effect: Effect::RestartRke2,
    });
    if config.role == Role::Server {
        files.push(RenderedFile {
            path: PSA_CONFIG.into(),
            contents: PSA_SOURCE.as_bytes().to_vec(),
            mode: CONFIG_MODE,
            effect: Effect::RestartRke2,
        });
    }
    for disk in DiskSpec::all(config) {
        files.push(RenderedFile {
            path: disk_dropin_path(config.role, disk.purpose),
            contents: format!(
                "# Written by canarie-agent from the node config ({}).\n{}",
                disk.purpose.key(),
                node_config::disk_dropin(disk.purpose, &disk.mount_point)?
            )
            .into_bytes(),
            mode: UNIT_DROPIN_MODE,
            effect: Effect::DaemonReload,
        });
    }
    Ok(files)
}

/// The manifests seeded into RKE2's manifests directory, in write order (servers only:
/// none for an agent).
pub fn render_manifests(config: &NodeConfig) -> Result<Vec<RenderedFile>> {
    let mut files = Vec::new();
    if config.role == Role::Server {
        files.extend(manifests::render(config)?);
        files.extend(cluster_values::render(config)?);
    }
    Ok(files)
}

/// Every file [`render`] can write, for any config and either role: what the agent owns
/// beside the token drop-in and the cluster Secrets (owned by their own steps). A file named
/// here that the current config does not render is one the config stopped wanting; any other
/// file in the same directories (an operator's manifest or drop-in) is never the agent's.
///
/// Built from the names the renderers use, not a copy of them, and checked against `render`
/// by a test, so a new output cannot be forgotten here.
pub fn owned_files() -> Vec<OwnedFile> {
    let mut owned = owned_config_files();
    owned.extend(owned_manifests());
    owned
}

/// The files [`render_config_files`] can write.
pub fn owned_config_files() -> Vec<OwnedFile> {
    let file = |path: PathBuf, effect| OwnedFile { path, effect };
    let mut owned = vec![
        file(RKE2_CONFIG.into(), Effect::RestartRke2),
        file(PSA_CONFIG.into(), Effect::RestartRke2),
    ];
    for role in [Role::Server, Role::Agent] {
        // An agent has no server state (config validation refuses the disk there).
        let purposes = Purpose::ALL
            .into_iter()
            .filter(|p| role == Role::Server || *p != Purpose::ServerState);
        for purpose in purposes {
            owned.push(file(disk_dropin_path(role, purpose), Effect::DaemonReload));
        }
    }
    owned
}

/// The files [`render_manifests`] can write.
pub fn owned_manifests() -> Vec<OwnedFile> {
    let manifests = manifests::file_names().chain([
        cluster_values::CLUSTER_VALUES_FILE,
        cluster_values::LONGHORN_UI_FILE,
    ]);
    manifests
        .map(|name| OwnedFile {
            path: Path::new(RKE2_MANIFESTS_DIR).join(name),
            effect: Effect::AppliedByRke2,
        })
        .collect()
}

/// The RKE2 unit's drop-in with `RequiresMountsFor=` the disk of `purpose`.
pub fn disk_dropin_path(role: Role, purpose: Purpose) -> PathBuf {
    let name = match purpose {
        Purpose::LonghornData => "10-canarie-data-disk.conf",
        Purpose::ServerState => "10-canarie-server-state-disk.conf",
    };
    Path::new(crate::disk::SYSTEMD_UNIT_DIR)
        .join(format!("{}.d", role.rke2_unit()))
        .join(name)
}

/// The join token drop-in, `/etc/rancher/rke2/config.yaml.d/10-token.yaml` (mode 0600).
pub fn render_token_dropin(token: &SecretString) -> SecretFile {
    SecretFile::new(
        RKE2_TOKEN_DROPIN.into(),
        node_config::token_yaml(token),
        TOKEN_MODE,
        Effect::RestartRke2,
    )
}

fn with_header(header: &str, body: &str) -> Vec<u8> {
    let mut out = String::with_capacity(header.len() + body.len());
    out.push_str(header);
    out.push_str(body);
    out.into_bytes()
}
