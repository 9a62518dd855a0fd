//! Rules serde cannot express. Each error names the JSON path and what was expected.

use super::{ConfigError, NodeConfig, Role, CONFIG_VERSION};
use std::net::Ipv4Addr;

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
    for (i, label) in c.node_labels.iter().enumerate() {
        node_label(&format!("node_labels[{i}]"), label)?;
    }
    for (i, taint) in c.node_taints.iter().enumerate() {
        node_taint(&format!("node_taints[{i}]"), taint)?;
    }
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
    let secret_ok = (1..=127).contains(&jt.secret.len())
        && jt
            .secret
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
    if !secret_ok {
        return Err(ConfigError::new(
            "join_token.secret",
            format!(
                "{:?} is not a Key Vault secret name (1-127 letters, digits or hyphens)",
                jt.secret
            ),
        ));
    }
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

fn validate_data_disk(c: &NodeConfig) -> Check {
    let Some(d) = &c.data_disk else { return Ok(()) };
    if d.lun > 63 {
        return Err(ConfigError::new(
            "data_disk.lun",
            format!("is {}, expected 0-63", d.lun),
        ));
    }
    if let Some(dev) = &d.device {
        if !dev.is_absolute() || !dev.starts_with("/dev") {
            return Err(ConfigError::new(
                "data_disk.device",
                format!("{} is not a device path under /dev", dev.display()),
            ));
        }
    }
    let mp = &d.mount_point;
    let bad_mount = !mp.is_absolute()
        || mp.parent().is_none()
        || mp
            .components()
            .any(|comp| matches!(comp, std::path::Component::ParentDir))
        || [
            "/etc", "/usr", "/boot", "/proc", "/sys", "/dev", "/run", "/var", "/var/lib",
        ]
        .iter()
        .any(|sys| mp == std::path::Path::new(sys));
    if bad_mount {
        return Err(ConfigError::new(
            "data_disk.mount_point",
            format!(
                "{} is not a dedicated absolute directory (e.g. /var/lib/longhorn)",
                mp.display()
            ),
        ));
    }
    // ext4 labels are at most 16 bytes; a longer one would be truncated and never match again.
    if d.label.is_empty() || d.label.len() > 16 || !d.label.chars().all(|ch| ch.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            "data_disk.label",
            format!(
                "{:?} is not an ext4 label (1-16 printable ASCII characters, no spaces)",
                d.label
            ),
        ));
    }
    if d.min_size_gib == 0 {
        return Err(ConfigError::new(
            "data_disk.min_size_gib",
            "is 0, expected at least 1",
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain, as Kubernetes requires of node and object names.
fn dns_subdomain(path: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid name (lowercase letters, digits, '-' and '.')"),
        ))
    }
}

/// A label key: optional DNS prefix and `/`, then a name of at most 63 characters.
fn label_key_ok(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        && name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && name.ends_with(|ch: char| ch.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(|p| dns_subdomain("", p).is_ok())
}

fn label_value_ok(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            && value.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && value.ends_with(|ch: char| ch.is_ascii_alphanumeric()))
}

fn node_label(path: &str, label: &str) -> Check {
    match label.split_once('=') {
        Some((k, v)) if label_key_ok(k) && label_value_ok(v) => Ok(()),
        _ => Err(ConfigError::new(
            path,
            format!("{label:?} is not a node label: expected key=value with a Kubernetes label key and value"),
        )),
    }
}

fn node_taint(path: &str, taint: &str) -> Check {
    let err = || {
        ConfigError::new(
            path,
            format!("{taint:?} is not a taint: expected key=value:Effect or key:Effect, Effect one of NoSchedule, PreferNoSchedule, NoExecute"),
        )
    };
    let (kv, effect) = taint.rsplit_once(':').ok_or_else(err)?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(err());
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if label_key_ok(key) && label_value_ok(value) {
        Ok(())
    } else {
        Err(err())
    }
}
