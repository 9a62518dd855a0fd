//! The node config: the desired state OpenTofu hands each VM through IMDS userData.
//!
//! Field names are a contract with `infra-tofu/` and with operators' tooling: rename
//! nothing without a new `version`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The only config version this agent understands.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "canarie node config",
    description = "Desired state of one cluster node, read from IMDS userData (base64 JSON) or --config FILE."
)]
pub struct NodeConfig {
    /// Config format version; must be 1.
    pub version: u32,
    /// `server` runs rke2-server (control plane), `agent` runs rke2-agent (worker).
    pub role: Role,
    /// Kubernetes node name; defaults to the hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub cluster: ClusterConfig,
    pub join_token: JoinTokenConfig,
    /// The Longhorn data disk; absent on nodes without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_disk: Option<DataDiskConfig>,
    /// The disk holding RKE2's server state (`/var/lib/rancher/rke2/server`: etcd, its
    /// snapshots, certificates, token), so a replaced server comes back as the same member
    /// (servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_state_disk: Option<ServerStateDiskConfig>,
    /// etcd snapshot schedule and retention overrides (servers only); the agent's defaults
    /// apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_snapshots: Option<EtcdSnapshotsConfig>,
    /// Extra node labels, each `key=value`; applied at first registration only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_labels: Vec<String>,
    /// Node taints, each `key=value:Effect` or `key:Effect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_taints: Vec<String>,
    /// Cluster secrets the server seeds from Key Vault as Kubernetes Secrets (servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_secrets: Option<ClusterSecretsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }

    /// The RKE2 systemd unit this role runs.
    pub fn rke2_unit(self) -> &'static str {
        match self {
            Role::Server => "rke2-server.service",
            Role::Agent => "rke2-agent.service",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Supervisor URL of an existing server (`https://HOST:9345`). Required for agents and
    /// joining servers; absent on the first server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Extra subject alternative names for the API server certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_san: Vec<String>,
    /// The load balancer's public IPv4 address (Traefik publishes it as the Ingresses' status address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// How many nodes carry a Longhorn data disk; sizes Longhorn's replica count (servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_nodes: Option<u32>,
    /// The git repository Fleet pulls the Phase 5-7 bundles from (servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<GitRepoConfig>,
    /// The cluster's name: external-dns's TXT owner id (default `canarie`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The cluster's DNS zone (e.g. `k8s.example.com`): external-dns manages it, and the
    /// public endpoints (Grafana, the Longhorn UI) get their hosts under it (servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_zone: Option<String>,
    /// Where Longhorn creates each storage node's default disk (its cluster-wide
    /// `defaultDataPath` setting, which the server seeds). Must equal `data_disk.mount_point`
    /// on every node with a data disk, or Longhorn's replicas land on the OS disk.
    #[serde(default = "default_longhorn_data_path")]
    pub longhorn_data_path: PathBuf,
}

/// Longhorn's own default data path, and so the default mount point of the data disk: a
/// cluster that keeps both defaults needs to set neither.
fn default_longhorn_data_path() -> PathBuf {
    PathBuf::from("/var/lib/longhorn")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitRepoConfig {
    /// Clone URL (`https://…` or `git@…`).
    pub url: String,
    /// Branch Fleet follows; always set explicitly.
    pub branch: String,
    /// Name of the Kubernetes Secret (in `fleet-local`) with the git credentials, if the repo is private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenConfig {
    /// Key Vault name (the `NAME` in `https://NAME.vault.azure.net`).
    pub vault: String,
    /// Secret name holding the RKE2 join token.
    pub secret: String,
    /// A user-assigned identity to use; the system-assigned identity when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// How long a 403 ForbiddenByRbac is retried, in seconds: a fresh role assignment
    /// takes up to 10 minutes to propagate.
    #[serde(default = "default_rbac_wait_seconds")]
    pub rbac_wait_seconds: u64,
}

fn default_rbac_wait_seconds() -> u64 {
    600
}

/// A user-assigned managed identity, named exactly one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Identity {
    ClientId(String),
    ObjectId(String),
    MsiResId(String),
}

impl Identity {
    /// The IMDS token query parameter for this identity.
    pub fn query_pair(&self) -> (&'static str, &str) {
        match self {
            Identity::ClientId(v) => ("client_id", v),
            Identity::ObjectId(v) => ("object_id", v),
            Identity::MsiResId(v) => ("msi_res_id", v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataDiskConfig {
    /// Azure LUN of the data disk (0-63).
    pub lun: u8,
    /// Explicit device path; wins over LUN discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// Where the disk is mounted; must equal `cluster.longhorn_data_path`.
    #[serde(default = "default_longhorn_data_path")]
    pub mount_point: PathBuf,
    /// ext4 label the agent formats with and recognises as its own.
    #[serde(default = "default_label")]
    pub label: String,
    /// Refuse a disk smaller than this many GiB.
    #[serde(default = "default_min_size_gib")]
    pub min_size_gib: u64,
    /// How long to wait for the disk's link to appear, in seconds.
    #[serde(default = "default_wait_seconds")]
    pub wait_seconds: u64,
}

fn default_label() -> String {
    "longhorn".to_string()
}

/// The server state disk. Its mount point is not configurable: it is RKE2's server state
/// directory (`/var/lib/rancher/rke2/server`), the one place RKE2 keeps what a replaced
/// server needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerStateDiskConfig {
    /// Azure LUN of the server state disk (0-63); not the data disk's.
    pub lun: u8,
    /// Explicit device path; wins over LUN discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// ext4 label the agent formats with and recognises as its own; not the data disk's.
    #[serde(default = "default_state_label")]
    pub label: String,
    /// Refuse a disk smaller than this many GiB.
    #[serde(default = "default_min_size_gib")]
    pub min_size_gib: u64,
    /// How long to wait for the disk's link to appear, in seconds.
    #[serde(default = "default_wait_seconds")]
    pub wait_seconds: u64,
}

fn default_state_label() -> String {
    "rke2-server".to_string()
}

/// RKE2's etcd snapshot settings (servers). Absent fields take the agent's defaults
/// (docs/configuration.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdSnapshotsConfig {
    /// A five-field cron expression (`etcd-snapshot-schedule-cron`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_cron: Option<String>,
    /// How many snapshots to keep (`etcd-snapshot-retention`), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u32>,
}

fn default_min_size_gib() -> u64 {
    1
}

fn default_wait_seconds() -> u64 {
    120
}

/// The cluster secrets a server reads from Key Vault (the vault, identity and RBAC wait of
/// `join_token`) and seeds as Kubernetes Secrets. Each entry names the Key Vault secret
/// holding the secret part; everything else about it is plain config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSecretsConfig {
    /// Fleet's git credentials (HTTPS basic auth), seeded into `fleet-local` under the name
    /// `cluster.git_repo.auth_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_auth: Option<GitAuthSecret>,
    /// Grafana's admin login, Secret `monitoring/grafana-admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana_admin: Option<LoginSecret>,
    /// The Longhorn UI's basic-auth login, Secret `longhorn-system/longhorn-ui-auth` (htpasswd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longhorn_ui_auth: Option<LoginSecret>,
    /// external-dns's Azure service principal, Secret `external-dns/external-dns-azure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_dns_azure: Option<ExternalDnsAzureSecret>,
}

/// Git credentials: the token (or password) is the Key Vault secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitAuthSecret {
    /// Key Vault secret holding the token or password.
    pub secret: String,
    /// The user name sent with it (GitHub accepts any non-empty name with a token).
    pub username: String,
}

/// A user name and a password; the password is the Key Vault secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginSecret {
    /// Key Vault secret holding the password.
    pub secret: String,
    /// The user name.
    #[serde(default = "default_login_username")]
    pub username: String,
}

fn default_login_username() -> String {
    "admin".to_string()
}

/// An Azure service principal for external-dns; its client secret is the Key Vault secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalDnsAzureSecret {
    /// Key Vault secret holding the service principal's client secret.
    pub secret: String,
    /// Entra tenant id (GUID).
    pub tenant_id: String,
    /// Subscription of the DNS zone (GUID).
    pub subscription_id: String,
    /// Resource group of the DNS zone.
    pub resource_group: String,
    /// The service principal's application (client) id (GUID).
    pub client_id: String,
}
