//! Node state under /var/lib/canarie-agent: what converged, when, with which config digest.
//! Keyed by the machine's identity, so a VM cloned from a bootstrapped image runs a full
//! bootstrap instead of trusting a marker that belongs to another machine.

use super::inputs::SecretRead;
use crate::azure::{VaultCause, VaultRefusal};
use crate::config::{ConfigSource, NodeConfig};
use crate::fsutil;
use crate::paths::{Root, STATE_DIR};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The state file (no secrets; readable by doctor without root).
pub const STATE_FILE: &str = "/var/lib/canarie-agent/state.json";
/// The last node config that converged, for boots when IMDS is unreachable.
pub const LAST_CONFIG_FILE: &str = "/var/lib/canarie-agent/last-config.json";

/// Where the machine's identity is read, in order: the SMBIOS product UUID (Azure's VM
/// identity, different for every VM even from one image), then systemd's machine id.
const MACHINE_ID_SOURCES: &[&str] = &["/sys/class/dmi/id/product_uuid", "/etc/machine-id"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Identity of the machine this state belongs to.
    pub machine_id: String,
    /// Digest of the node config that converged last.
    #[serde(default)]
    pub config_digest: Option<String>,
    /// When the node last converged (RFC 3339, UTC).
    #[serde(default)]
    pub converged_at: Option<String>,
    /// Version of the join token secret that was written.
    #[serde(default)]
    pub join_token_version: Option<String>,
    /// Digest of what RKE2 reads at start (its config files and the join token's version)
    /// when a converged run last left it running: a differing digest means RKE2 still runs
    /// with older files (an earlier run stopped between writing them and the restart).
    #[serde(default)]
    pub rke2_inputs: Option<String>,
    /// The most recent run, converged or not.
    #[serde(default)]
    pub last_run: Option<RunRecord>,
    /// What was reported to Azure's WireServer (reconcile/azure_report.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_report: Option<AzureReportRecord>,
}

/// Reports to Azure: whether the platform still waits for one, and the last one sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureReportRecord {
    /// When the WireServer accepted `Ready` (RFC 3339). Set once; no report follows it.
    #[serde(default)]
    pub ready_reported_at: Option<String>,
    #[serde(default)]
    pub last: Option<LastReport>,
}

/// The last report sent (never a secret: the failure line and a fixed progress text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReport {
    pub at: String,
    /// `Ready` or `NotReady`.
    pub state: String,
    #[serde(default)]
    pub sub_status: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `accepted`, or `failed: <why>`.
    pub outcome: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub started_at: String,
    pub finished_at: String,
    /// `converged` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub config_source: Option<String>,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    /// `unchanged`, `changed`, `kept` (offline fallback), `skipped` or `failed`.
    pub outcome: String,
    pub changes: usize,
    pub duration_ms: u64,
    /// The Key Vault secret a failed step could not read, when it was reading one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretFailure>,
}

/// Which secret a failed step could not read and what Key Vault answered, as doctor explains
/// it later from the node state (by these fields, not by the run's message). Never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFailure {
    /// The node config entry naming the secret (`cluster_secrets.grafana_admin`).
    pub entry: String,
    pub secret: String,
    pub vault: String,
    /// Key Vault's refusal: its HTTP status and error codes (none when it did not refuse:
    /// it did not answer, or the token could not be had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
}

impl SecretFailure {
    /// The secret read that failed with `err`, if `err` is one.
    pub fn of(err: &anyhow::Error) -> Option<SecretFailure> {
        let read = err.downcast_ref::<SecretRead>()?;
        let refusal = VaultRefusal::find(err);
        Some(SecretFailure {
            entry: read.entry.clone(),
            secret: read.secret.clone(),
            vault: read.vault.clone(),
            status: refusal.map(|r| r.status),
            codes: refusal.map(|r| r.codes.clone()).unwrap_or_default(),
        })
    }

    /// Why Key Vault refused, when it did.
    pub fn cause(&self) -> Option<VaultCause> {
        VaultCause::of(self.status?, &self.codes)
    }
}

/// The identity of this machine, as seen under `root`.
pub fn machine_id(root: &Root) -> Result<String> {
    for source in MACHINE_ID_SOURCES {
        if let Ok(text) = std::fs::read_to_string(root.join(source)) {
            let id = text.trim().to_ascii_lowercase();
            if !id.is_empty() {
                return Ok(id);
            }
        }
    }
    anyhow::bail!(
        "cannot tell which machine this is: none of {} is readable (run as root)",
        MACHINE_ID_SOURCES.join(", ")
    )
}

impl NodeState {
    /// The state recorded for this machine; a state of another machine (a cloned image) or
    /// an unreadable one counts as none.
    pub fn load(root: &Root, machine_id: &str) -> NodeState {
        let fresh = NodeState {
            machine_id: machine_id.to_string(),
            ..NodeState::default()
        };
        let Some(state) = read_json::<NodeState>(&root.join(STATE_FILE)) else {
            return fresh;
        };
        if state.machine_id != machine_id {
            tracing::warn!(
                recorded = %state.machine_id,
                current = %machine_id,
                "node state belongs to another machine (cloned image?): bootstrapping from scratch"
            );
            return fresh;
        }
        state
    }

    /// Reads the state file whatever machine it belongs to (doctor).
    pub fn read_any(root: &Root) -> Option<NodeState> {
        read_json(&root.join(STATE_FILE))
    }

    /// True when this machine converged before: a later boot may fall back on local state.
    pub fn has_converged(&self) -> bool {
        self.converged_at.is_some()
    }

    pub fn save(&self, root: &Root) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("serializing the node state")?;
        json.push(b'\n');
        fsutil::write_if_changed(&root.join(STATE_FILE), &json, 0o644)
            .with_context(|| format!("saving the node state in {STATE_DIR}"))?;
        Ok(())
    }
}

/// Records the config that converged, for offline boots.
pub fn save_last_config(root: &Root, config: &NodeConfig) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(config).context("serializing the node config")?;
    json.push(b'\n');
    fsutil::write_if_changed(&root.join(LAST_CONFIG_FILE), &json, 0o644)
        .context("saving the last converged node config")?;
    Ok(())
}

/// The config that converged last, if any.
pub fn load_last_config(root: &Root) -> Result<(NodeConfig, ConfigSource)> {
    let path = root.join(LAST_CONFIG_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = crate::config::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is invalid at {e}", path.display()))?;
    Ok((
        config,
        ConfigSource::LastConverged(PathBuf::from(LAST_CONFIG_FILE)),
    ))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable state file");
            None
        }
    }
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_another_machine_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let state = NodeState {
            machine_id: "aaaa".into(),
            converged_at: Some(now_rfc3339()),
            ..Default::default()
        };
        state.save(&root).unwrap();
        assert!(NodeState::load(&root, "aaaa").has_converged());
        let other = NodeState::load(&root, "bbbb");
        assert!(!other.has_converged());
        assert_eq!(other.machine_id, "bbbb");
    }

    #[test]
    fn machine_id_prefers_the_product_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert!(machine_id(&root).is_err());
        std::fs::create_dir_all(root.join("/etc")).unwrap();
        std::fs::write(root.join("/etc/machine-id"), "0123abcd\n").unwrap();
        assert_eq!(machine_id(&root).unwrap(), "0123abcd");
        std::fs::create_dir_all(root.join("/sys/class/dmi/id")).unwrap();
        std::fs::write(root.join("/sys/class/dmi/id/product_uuid"), "7F3C-AB\n").unwrap();
        assert_eq!(machine_id(&root).unwrap(), "7f3c-ab");
    }

    #[test]
    fn a_corrupt_state_file_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.join(STATE_DIR)).unwrap();
        std::fs::write(root.join(STATE_FILE), "{not json").unwrap();
        assert!(!NodeState::load(&root, "x").has_converged());
    }
}
