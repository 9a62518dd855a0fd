//! Rules serde cannot express. Each error names the JSON path and what was expected.

use super::{ConfigError, NodeConfig, Role, CONFIG_VERSION};
use std::net::Ipv4Addr;
use std::path::Path;

type Check = Result<(), ConfigError>;

pub(super) fn validate(c: &NodeConfig) -> Check {
    if c.version != CONFIG_VERSION {
        return Err(ConfigError::new(
            "version",
            format!(
                "is {}, expected {CONFIG_VERSION}: this agent reads config version {CONFIG_VERSION} only",
                c.version
            ),
        ));
    }
    if let Some(name) = &c.node_name {
        dns_subdomain("node_name", name)?;
    }
    validate_cluster(c)?;
    validate_join_token(c)?;
    validate_data_disk(c)?;
    validate_server_state_disk(c)?;
    validate_etcd_snapshots(c)?;
    validate_cluster_secrets(c)?;
    super::node_labels::check_labels(&c.node_labels)?;
    super::node_labels::check_taints(&c.node_taints)?;
    Ok(())
}

fn validate_cluster(c: &NodeConfig) -> Check {
    let cl = &c.cluster;
    match (&cl.server_url, c.role) {
        (None, Role::Agent) => {
            return Err(ConfigError::new(
                "cluster.server_url",
                "is required for role agent: set it to the server's supervisor URL, e.g. https://10.20.0.4:9345",
            ))
        }
        (Some(url), _) => server_url(url)?,
        (None, Role::Server) => {}
    }
    for (i, san) in cl.tls_san.iter().enumerate() {
        if san.is_empty() || san.contains(char::is_whitespace) || san.contains(',') {
            return Err(ConfigError::new(
                format!("cluster.tls_san[{i}]"),
                format!("{san:?} is not a hostname or IP address"),
            ));
        }
    }
    if let Some(ip) = &cl.public_ip {
        ip.parse::<Ipv4Addr>().map_err(|_| {
            ConfigError::new(
                "cluster.public_ip",
                format!("{ip:?} is not an IPv4 address"),
            )
        })?;
    }
    if cl.storage_nodes == Some(0) {
        return Err(ConfigError::new(
            "cluster.storage_nodes",
            "is 0, expected at least 1 (or leave it out)",
        ));
    }
    if let Some(repo) = &cl.git_repo {
        if c.role != Role::Server {
            return Err(ConfigError::new(
                "cluster.git_repo",
                "is only for role server: Fleet is seeded by the server",
            ));
        }
        if !(repo.url.starts_with("https://")
            || repo.url.starts_with("git@")
            || repo.url.starts_with("ssh://"))
        {
            return Err(ConfigError::new(
                "cluster.git_repo.url",
                format!(
                    "{:?} is not a git URL (https://…, ssh://… or git@…)",
                    repo.url
                ),
            ));
        }
        if repo.branch.is_empty() || repo.branch.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "cluster.git_repo.branch",
                format!("{:?} is not a branch name", repo.branch),
            ));
        }
        if let Some(secret) = &repo.auth_secret {
            dns_subdomain("cluster.git_repo.auth_secret", secret)?;
        }
    }
    if let Some(name) = &cl.name {
        dns_label("cluster.name", name)?;
    }
    longhorn_data_path(&cl.longhorn_data_path)?;
    if let Some(zone) = &cl.dns_zone {
        if c.role != Role::Server {
            return Err(ConfigError::new(
                "cluster.dns_zone",
                "is only for role server: the server seeds the cluster values",
            ));
        }
        dns_zone(zone)?;
    }
    Ok(())
}

fn server_url(url: &str) -> Check {
    let path = "cluster.server_url";
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::new(path, format!("{url:?} is not a URL ({e})")))?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() {
        return Err(ConfigError::new(
            path,
            format!("{url:?} must be https://HOST:PORT (RKE2's supervisor, usually port 9345)"),
        ));
    }
    Ok(())
}

fn validate_join_token(c: &NodeConfig) -> Check {
    let jt = &c.join_token;
    // Azure's rules: 3-24 characters, letters, digits and hyphens, starting with a letter.
    let vault_ok = (3..=24).contains(&jt.vault.len())
        && jt.vault.starts_with(|ch: char| ch.is_ascii_alphabetic())
        && jt
            .vault
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        && !jt.vault.ends_with('-');
    if !vault_ok {
        return Err(ConfigError::new(
            "join_token.vault",
            format!("{:?} is not a Key Vault name (3-24 letters, digits or hyphens, starting with a letter)", jt.vault),
        ));
    }
    kv_secret_name("join_token.secret", &jt.secret)?;
    if let Some(identity) = &jt.identity {
        let (key, value) = identity.query_pair();
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                format!("join_token.identity.{key}"),
                "is empty or contains white space",
            ));
        }
    }
    Ok(())
}

/// What both disks share: where to find them, what they are called, how small they may be.
struct DiskFields<'a> {
    /// The config key, the start of every error path.
    key: &'static str,
    lun: u8,
    device: Option<&'a Path>,
    label: &'a str,
    min_size_gib: u64,
}

fn disk_fields(d: &DiskFields<'_>) -> Check {
    let key = d.key;
    if d.lun > 63 {
        return Err(ConfigError::new(
            format!("{key}.lun"),
            format!("is {}, expected 0-63", d.lun),
        ));
    }
    if let Some(dev) = d.device {
        if !dev.is_absolute() || !dev.starts_with("/dev") {
            return Err(ConfigError::new(
                format!("{key}.device"),
                format!("{} is not a device path under /dev", dev.display()),
            ));
        }
    }
    // ext4 labels are at most 16 bytes; a longer one would be truncated and never match again.
    if d.label.is_empty() || d.label.len() > 16 || !d.label.chars().all(|ch| ch.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            format!("{key}.label"),
            format!(
                "{:?} is not an ext4 label (1-16 printable ASCII characters, no spaces)",
                d.label
            ),
        ));
    }
    if d.min_size_gib == 0 {
        return Err(ConfigError::new(
            format!("{key}.min_size_gib"),
            "is 0, expected at least 1",
        ));
    }
    Ok(())
}

fn validate_data_disk(c: &NodeConfig) -> Check {
    let Some(d) = &c.data_disk else { return Ok(()) };
    disk_fields(&DiskFields {
        key: "data_disk",
        lun: d.lun,
        device: d.device.as_deref(),
        label: &d.label,
        min_size_gib: d.min_size_gib,
    })?;
    let mp = &d.mount_point;
    if !dedicated_dir(mp) {
        return Err(ConfigError::new(
            "data_disk.mount_point",
            format!(
                "{} is not a dedicated absolute directory (e.g. /var/lib/longhorn)",
                mp.display()
            ),
        ));
    }
    // Path equality is by component, so a trailing slash on either side does not matter.
    let data_path = &c.cluster.longhorn_data_path;
    if mp != data_path {
        return Err(ConfigError::new(
            "data_disk.mount_point",
            format!(
                "is {}, but cluster.longhorn_data_path is {}: Longhorn creates its disk at cluster.longhorn_data_path, so replicas would land on the OS disk; set both to the same directory (and cluster.longhorn_data_path alike on the servers, which seed it)",
                mp.display(),
                data_path.display()
            ),
        ));
    }
    Ok(())
}

fn validate_server_state_disk(c: &NodeConfig) -> Check {
    let Some(s) = &c.server_state_disk else {
        return Ok(());
    };
    if c.role != Role::Server {
        return Err(ConfigError::new(
            "server_state_disk",
            "is only for role server: agents keep no server state; a worker's disk is data_disk",
        ));
    }
    disk_fields(&DiskFields {
        key: "server_state_disk",
        lun: s.lun,
        device: s.device.as_deref(),
        label: &s.label,
        min_size_gib: s.min_size_gib,
    })?;
    let Some(d) = &c.data_disk else { return Ok(()) };
    let (mp, server_dir) = (&d.mount_point, Path::new(crate::paths::RKE2_SERVER_DIR));
    if mp.starts_with(server_dir) || server_dir.starts_with(mp) {
        return Err(ConfigError::new(
            "data_disk.mount_point",
            format!(
                "{} overlaps RKE2's server state directory {}, where server_state_disk is mounted: choose another directory for Longhorn",
                mp.display(),
                server_dir.display()
            ),
        ));
    }
    // Each disk is found by its own LUN (or device) and recognised by its own label: a
    // shared one would let the agent mount one disk where the other belongs.
    let clash = if s.lun == d.lun {
        Some(format!("lun {}", s.lun))
    } else if s.device.is_some() && s.device == d.device {
        Some(format!(
            "device {}",
            s.device.as_deref().unwrap_or(Path::new("")).display()
        ))
    } else if s.label == d.label {
        Some(format!("label {:?}", s.label))
    } else {
        None
    };
    match clash {
        Some(what) => Err(ConfigError::new(
            "server_state_disk",
            format!("has the same {what} as data_disk: the server state and Longhorn need two disks, each with its own LUN, device and label"),
        )),
        None => Ok(()),
    }
}

fn validate_etcd_snapshots(c: &NodeConfig) -> Check {
    let Some(e) = &c.etcd_snapshots else {
        return Ok(());
    };
    if c.role != Role::Server {
        return Err(ConfigError::new(
            "etcd_snapshots",
            "is only for role server: etcd runs on the servers",
        ));
    }
    if let Some(cron) = &e.schedule_cron {
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let ok = fields.len() == 5
            && fields.iter().all(|f| {
                f.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "*/,-?".contains(ch))
            });
        if !ok {
            return Err(ConfigError::new(
                "etcd_snapshots.schedule_cron",
                format!("{cron:?} is not a five-field cron expression (e.g. \"0 */6 * * *\")"),
            ));
        }
    }
    if e.retention == Some(0) {
        return Err(ConfigError::new(
            "etcd_snapshots.retention",
            "is 0, expected at least 1 (or leave it out)",
        ));
    }
    Ok(())
}

/// An absolute directory of its own: not `/`, no `..`, not a system directory the OS needs.
fn dedicated_dir(dir: &Path) -> bool {
    dir.is_absolute()
        && dir.parent().is_some()
        && !dir
            .components()
            .any(|comp| matches!(comp, std::path::Component::ParentDir))
        && ![
            "/etc", "/usr", "/boot", "/proc", "/sys", "/dev", "/run", "/var", "/var/lib",
        ]
        .iter()
        .any(|sys| dir == Path::new(sys))
}

/// Longhorn's data path reaches helm-controller as `--set-string key=value`, where `,` and
/// `\` are syntax, and must be the data disk's mount point, which systemd reads too: only
/// plain path characters.
fn longhorn_data_path(dir: &Path) -> Check {
    let plain = dir.to_str().is_some_and(|s| {
        s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "/._-".contains(ch))
    });
    if plain && dedicated_dir(dir) {
        Ok(())
    } else {
        Err(ConfigError::new(
            "cluster.longhorn_data_path",
            format!(
                "{} is not a dedicated absolute directory of letters, digits and '/._-' (e.g. /var/lib/longhorn)",
                dir.display()
            ),
        ))
    }
}

fn kv_secret_name(path: &str, name: &str) -> Check {
    let ok = (1..=127).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{name:?} is not a Key Vault secret name (1-127 letters, digits or hyphens)"),
        ))
    }
}

fn validate_cluster_secrets(c: &NodeConfig) -> Check {
    let Some(cs) = &c.cluster_secrets else {
        return Ok(());
    };
    if c.role != Role::Server {
        return Err(ConfigError::new(
            "cluster_secrets",
            "is only for role server: the server seeds the cluster's Secrets",
        ));
    }
    let secret = |path: &str, name: &str| -> Check {
        kv_secret_name(&format!("{path}.secret"), name)?;
        // The join token must never end up in a Kubernetes Secret any pod could mount.
        if name.eq_ignore_ascii_case(&c.join_token.secret) {
            return Err(ConfigError::new(
                format!("{path}.secret"),
                format!("{name:?} is the join token's secret (join_token.secret): name the secret that holds this credential"),
            ));
        }
        Ok(())
    };
    if let Some(git) = &cs.git_auth {
        secret("cluster_secrets.git_auth", &git.secret)?;
        basic_auth_username("cluster_secrets.git_auth.username", &git.username)?;
        let repo = c.cluster.git_repo.as_ref();
        if repo.and_then(|r| r.auth_secret.as_ref()).is_none() {
            return Err(ConfigError::new(
                "cluster_secrets.git_auth",
                "needs cluster.git_repo.auth_secret: the name of the Secret to seed in fleet-local (e.g. canarie-kube-auth), which the GitRepo then uses",
            ));
        }
        if repo.is_some_and(|r| !r.url.starts_with("https://")) {
            return Err(ConfigError::new(
                "cluster_secrets.git_auth",
                "is HTTPS basic auth, but cluster.git_repo.url is not an https:// URL",
            ));
        }
    }
    for (path, login) in [
        ("cluster_secrets.grafana_admin", &cs.grafana_admin),
        ("cluster_secrets.longhorn_ui_auth", &cs.longhorn_ui_auth),
    ] {
        if let Some(login) = login {
            secret(path, &login.secret)?;
            basic_auth_username(&format!("{path}.username"), &login.username)?;
        }
    }
    if let Some(dns) = &cs.external_dns_azure {
        let path = "cluster_secrets.external_dns_azure";
        secret(path, &dns.secret)?;
        guid(&format!("{path}.tenant_id"), &dns.tenant_id)?;
        guid(&format!("{path}.subscription_id"), &dns.subscription_id)?;
        guid(&format!("{path}.client_id"), &dns.client_id)?;
        resource_group(&format!("{path}.resource_group"), &dns.resource_group)?;
    }
    Ok(())
}

/// A user name for HTTP basic auth and htpasswd: no `:` (the separator), no white space
/// or control characters.
fn basic_auth_username(path: &str, name: &str) -> Check {
    let ok =
        (1..=64).contains(&name.len()) && name.chars().all(|ch| ch.is_ascii_graphic() && ch != ':');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!(
                "{name:?} is not a user name (1-64 printable ASCII characters, no spaces or ':')"
            ),
        ))
    }
}

fn guid(path: &str, value: &str) -> Check {
    let groups: Vec<&str> = value.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|ch| ch.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
        ))
    }
}

/// Azure's rules: 1-90 letters, digits, `_`, `-`, `.`, `(`, `)`, not ending in `.`.
fn resource_group(path: &str, name: &str) -> Check {
    let ok = (1..=90).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_alphanumeric() || "_-.()".contains(ch))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{name:?} is not a resource group name (1-90 letters, digits, _-.() , not ending in '.')"),
        ))
    }
}

/// A DNS zone the public hosts go under: lowercase labels, at least two, no trailing dot,
/// short enough that `longhorn.<zone>` is still a valid host name.
fn dns_zone(zone: &str) -> Check {
    let labels: Vec<&str> = zone.split('.').collect();
    let ok =
        labels.len() >= 2 && zone.len() <= 200 && labels.iter().all(|l| dns_label("", l).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "cluster.dns_zone",
            format!("{zone:?} is not a DNS zone (lowercase labels such as k8s.example.com, no trailing dot)"),
        ))
    }
}

/// RFC 1123 label: 1-63 lowercase letters, digits and `-`, not starting or ending with `-`.
fn dns_label(path: &str, label: &str) -> Check {
    let ok = (1..=63).contains(&label.len())
        && label
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{label:?} is not a DNS label (1-63 lowercase letters, digits or '-')"),
        ))
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of node and object names.
fn dns_subdomain(path: &str, name: &str) -> Check {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid name (lowercase letters, digits, '-' and '.')"),
        ))
    }
}

pub(super) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod cluster_secrets_tests {
    use crate::config::{parse, ConfigError};
    use serde_json::{json, Value};

    fn server() -> Value {
        serde_json::from_str(crate::config::EXAMPLE_SERVER_WITH_SECRETS).unwrap()
    }

    fn check(v: &Value) -> Result<(), ConfigError> {
        parse(v.to_string().as_bytes()).map(|_| ())
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut v = server();
        edit(&mut v);
        v
    }

    #[test]
    fn a_full_server_config_is_valid_and_defaults_the_login_names() {
        let c = parse(server().to_string().as_bytes()).unwrap();
        let cs = c.cluster_secrets.unwrap();
        assert_eq!(cs.grafana_admin.unwrap().username, "admin");
        assert_eq!(cs.longhorn_ui_auth.unwrap().username, "admin");
        assert_eq!(c.cluster.dns_zone.as_deref(), Some("k8s.example.com"));

        let named = edited(|v| v["cluster_secrets"]["longhorn_ui_auth"]["username"] = json!("ops"));
        let cs = parse(named.to_string().as_bytes()).unwrap().cluster_secrets;
        assert_eq!(cs.unwrap().longhorn_ui_auth.unwrap().username, "ops");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                edited(|v| {
                    v["role"] = json!("agent");
                    v["cluster"]["server_url"] = json!("https://10.0.0.4:9345");
                    v["cluster"].as_object_mut().unwrap().remove("git_repo");
                }),
                "cluster.dns_zone",
                "only for role server",
            ),
            (
                edited(|v| {
                    v["cluster"].as_object_mut().unwrap().remove("dns_zone");
                    v["role"] = json!("agent");
                    v["cluster"]["server_url"] = json!("https://10.0.0.4:9345");
                    v["cluster"].as_object_mut().unwrap().remove("git_repo");
                }),
                "cluster_secrets",
                "only for role server",
            ),
            (
                edited(|v| v["cluster"]["dns_zone"] = json!("k8s.example.com.")),
                "cluster.dns_zone",
                "not a DNS zone",
            ),
            (
                edited(|v| v["cluster"]["dns_zone"] = json!("localhost")),
                "cluster.dns_zone",
                "not a DNS zone",
            ),
            (
                edited(|v| v["cluster"]["name"] = json!("Prod_1")),
                "cluster.name",
                "not a DNS label",
            ),
            (
                edited(|v| v["cluster_secrets"]["grafana_admin"]["secret"] = json!("bad_name")),
                "cluster_secrets.grafana_admin.secret",
                "not a Key Vault secret name",
            ),
            (
                edited(|v| {
                    v["cluster_secrets"]["grafana_admin"]["secret"] = json!("RKE2-join-token")
                }),
                "cluster_secrets.grafana_admin.secret",
                "join token",
            ),
            (
                edited(|v| v["cluster_secrets"]["longhorn_ui_auth"]["username"] = json!("a:b")),
                "cluster_secrets.longhorn_ui_auth.username",
                "not a user name",
            ),
            (
                edited(|v| {
                    v["cluster"]["git_repo"]
                        .as_object_mut()
                        .unwrap()
                        .remove("auth_secret");
                }),
                "cluster_secrets.git_auth",
                "needs cluster.git_repo.auth_secret",
            ),
            (
                edited(|v| v["cluster"]["git_repo"]["url"] = json!("git@github.com:example/fleet")),
                "cluster_secrets.git_auth",
                "not an https:// URL",
            ),
            (
                edited(|v| {
                    v["cluster_secrets"]["external_dns_azure"]["tenant_id"] = json!("tenant")
                }),
                "cluster_secrets.external_dns_azure.tenant_id",
                "not a GUID",
            ),
            (
                edited(|v| {
                    v["cluster_secrets"]["external_dns_azure"]["resource_group"] = json!("rg.")
                }),
                "cluster_secrets.external_dns_azure.resource_group",
                "not a resource group name",
            ),
            (
                edited(|v| v["cluster_secrets"]["grafana_admin"]["password"] = json!("x")),
                "cluster_secrets.grafana_admin",
                "unknown field",
            ),
        ];
        for (config, path, message) in cases {
            let err = check(&config).expect_err(path);
            assert!(
                err.path.starts_with(path) && err.to_string().contains(message),
                "expected {path}: …{message}…, got {err}"
            );
        }
    }
}
