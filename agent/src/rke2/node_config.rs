//! `/etc/rancher/rke2/config.yaml`, the PSA config it points at, the token drop-in and the
//! RKE2 unit's data-disk drop-in.
//!
//! RKE2 skips (with a warning) keys the running subcommand does not know, so a server-only key
//! in an agent's file would be silently ignored; each key here is written only for the role
//! that has it (see `SERVER_KEYS` / `AGENT_KEYS`, checked against RKE2's flag list in tests).

use super::{yaml, NodeFacts, PSA_CONFIG};
use crate::config::{NodeConfig, Role, LONGHORN_DEFAULT_DISK_LABEL};
use crate::disk::Purpose;
use anyhow::{bail, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_yaml_ng::{Mapping, Value};

/// The admin kubeconfig (/etc/rancher/rke2/rke2.yaml) is a cluster-admin credential: root
/// only, as CIS asks. Operators use `sudo`; nothing on the node needs group read access.
/// A string, quoted in the file: YAML 1.1 would read a plain 0600 as the octal number 384.
pub const WRITE_KUBECONFIG_MODE: &str = "0600";

/// RKE2's ingress controller (docs/rke2-and-manifests.md, "Ingress").
const INGRESS_CONTROLLER: &str = "traefik";

/// The AddOn of the ingress-nginx HelmChart the agent seeded before RKE2 v1.36.
const RETIRED_INGRESS_ADDON: &str = "canarie-ingress-nginx";

/// Every key this module may write on a server, in file order.
pub const SERVER_KEYS: &[&str] = &[
    "server",
    "node-name",
    "node-label",
    "node-taint",
    "cni",
    "disable-kube-proxy",
    "ingress-controller",
    "disable",
    "tls-san",
    "write-kubeconfig-mode",
    "pod-security-admission-config-file",
    "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention",
];

/// etcd snapshots every 6 hours, kept for 7 days (RKE2's own defaults: every 12 hours, 5
/// kept, i.e. 2.5 days). The one place the defaults live; `etcd_snapshots` in the node
/// config overrides them. The snapshots go to RKE2's default directory,
/// `/var/lib/rancher/rke2/server/db/snapshots`: on the server state disk when there is one.
pub const ETCD_SNAPSHOT_SCHEDULE_CRON: &str = "0 */6 * * *";
pub const ETCD_SNAPSHOT_RETENTION: u32 = 28;

/// Every key this module may write on an agent, in file order.
pub const AGENT_KEYS: &[&str] = &["server", "node-name", "node-label", "node-taint"];

/// The YAML of config.yaml (without the header comment).
pub(super) fn config_yaml(config: &NodeConfig, facts: &NodeFacts) -> Result<String> {
    let mut m = Mapping::new();
    let mut put = |key: &str, value: Value| {
        debug_assert!(
            keys_for(config.role).contains(&key),
            "{key} is not a {} key",
            config.role
        );
        m.insert(key.into(), value);
    };
    // Agents always have a server URL (validated); a server with one joins an existing cluster.
    if let Some(url) = &config.cluster.server_url {
        put("server", url.as_str().into());
    }
    if let Some(name) = &config.node_name {
        put("node-name", name.as_str().into());
    }
    let labels = node_labels(config, facts);
    if !labels.is_empty() {
        put("node-label", strings(&labels));
    }
    if !config.node_taints.is_empty() {
        put("node-taint", strings(&config.node_taints));
    }
    if config.role == Role::Server {
        put("cni", "cilium".into());
        put("disable-kube-proxy", true.into());
        // RKE2's built-in Traefik, configured by the seeded rke2-traefik HelmChartConfig. Said
        // explicitly: left unset, RKE2 v1.36 keeps ingress-nginx on a cluster that has it.
        put("ingress-controller", strings(&[INGRESS_CONTROLLER]));
        // Clusters built before Traefik have the agent's own ingress-nginx AddOn (the
        // canarie-ingress-nginx.yaml manifest): a disabled AddOn is uninstalled by RKE2 and
        // its file deleted, which frees ports 80/443 for Traefik. Nothing on a new cluster.
        put("disable", strings(&[RETIRED_INGRESS_ADDON]));
        if !config.cluster.tls_san.is_empty() {
            put("tls-san", strings(&config.cluster.tls_san));
        }
        put("write-kubeconfig-mode", WRITE_KUBECONFIG_MODE.into());
        put("pod-security-admission-config-file", PSA_CONFIG.into());
        let snapshots = config.etcd_snapshots.clone().unwrap_or_default();
        put(
            "etcd-snapshot-schedule-cron",
            snapshots
                .schedule_cron
                .as_deref()
                .unwrap_or(ETCD_SNAPSHOT_SCHEDULE_CRON)
                .into(),
        );
        put(
            "etcd-snapshot-retention",
            snapshots
                .retention
                .unwrap_or(ETCD_SNAPSHOT_RETENTION)
                .into(),
        );
    }
    yaml::to_string(&Value::Mapping(m))
}

pub(super) fn keys_for(role: Role) -> &'static [&'static str] {
    match role {
        Role::Server => SERVER_KEYS,
        Role::Agent => AGENT_KEYS,
    }
}

/// The node's labels: the configured ones, plus Longhorn's default-disk label when the data
/// disk is mounted. RKE2 applies labels at first registration only, so the label must be in
/// place before RKE2 first starts. Config validation (config::node_labels) has refused a
/// config that sets the agent's label itself, so the two never collide.
fn node_labels(config: &NodeConfig, facts: &NodeFacts) -> Vec<String> {
    let mut labels = config.node_labels.clone();
    if facts.data_disk_mounted {
        labels.push(format!("{LONGHORN_DEFAULT_DISK_LABEL}=true"));
    }
    labels
}

fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Sequence(items.iter().map(|s| s.as_ref().into()).collect())
}

/// The `[Unit]` drop-in that keeps RKE2 from starting before the disk of `purpose` is
/// mounted.
pub(super) fn disk_dropin(purpose: Purpose, mount_point: &std::path::Path) -> Result<String> {
    let key = purpose.key();
    let Some(path) = mount_point.to_str() else {
        bail!("{key}.mount_point {} is not UTF-8", mount_point.display());
    };
    // systemd splits RequiresMountsFor= on white space and expands % specifiers; a mount point
    // needing quoting is refused rather than escaped into something systemd might read otherwise.
    if !path.starts_with('/')
        || path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'\\".contains(c))
    {
        bail!(
            "{key}.mount_point {path:?} cannot be used in a systemd unit: use an absolute path \
             without spaces, quotes or backslashes"
        );
    }
    let why = match purpose {
        Purpose::LonghornData => "# RKE2 runs Longhorn, whose data lives on the data disk: never start it before the\n",
        // An RKE2 server started without its state would initialise an empty etcd (or join
        // as a new member) next to the populated one.
        Purpose::ServerState => "# etcd, the cluster CA and the token live on the server state disk: never start RKE2\n# on an empty directory; never start it before the\n",
    };
    Ok(format!(
        "{why}# disk is mounted (systemd adds Requires= and After= on the mount unit).\n\
         [Unit]\n\
         RequiresMountsFor={}\n",
        path.replace('%', "%%")
    ))
}

/// The token drop-in's YAML; every intermediate copy of the token is zeroed on drop.
pub(super) fn token_yaml(token: &SecretString) -> SecretString {
    // Exact capacities: converting a String into the secret's Box<str> then needs no
    // reallocation, which would leave an unzeroed copy behind.
    let quoted_secret = SecretString::from(yaml::double_quoted(token.expose_secret()));
    let quoted = quoted_secret.expose_secret();
    const HEADER: &str =
        "# Written by canarie-agent: the join token from Key Vault. Mode 0600.\ntoken: ";
    let mut out = String::with_capacity(HEADER.len() + quoted.len() + 1);
    out.push_str(HEADER);
    out.push_str(quoted);
    out.push('\n');
    SecretString::from(out)
}
