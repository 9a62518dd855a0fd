//! The cluster-admin kubeconfig for an operator's machine (`canarie-agent kubeconfig
//! DESTINATION --out FILE`).
//!
//! Runs `ssh -p PORT -- DESTINATION sudo -n cat /etc/rancher/rke2/rke2.yaml` (the file is
//! root-only on the server), checks that what came back is a kubeconfig, points each
//! cluster's `server:` at the load balancer's public address instead of RKE2's
//! `https://127.0.0.1:6443`, and writes it 0600 through `fsutil::write_if_changed`
//! (temp file created with mode 0600 whatever the umask, fsync, rename). The rewrite is
//! textual, one line per cluster, so every other byte is RKE2's. The credentials are never
//! printed: not on success, not in errors (a parse error names a line and column only).
//!
//! An agent subcommand rather than a script: it reuses the atomic 0600 write, it parses the
//! file instead of editing it with sed, and it is tested in the crate's suite with a stand-in
//! for `ssh` (`--ssh PROGRAM`).

use crate::fsutil::{self, WriteOutcome};
use crate::subprocess::Program;
use anyhow::{bail, Context, Result};
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where RKE2 writes the admin kubeconfig on a server.
pub const REMOTE_KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";

/// The host part of `[USER@]HOST`; refuses what ssh would read as an option.
pub fn destination_host(destination: &str) -> Result<&str> {
    let host = destination.rsplit_once('@').map_or(destination, |(_, h)| h);
    if destination.starts_with('-')
        || host.is_empty()
        || destination.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        bail!("{destination:?} is not an SSH destination: expected USER@HOST, e.g. canarie@20.30.40.50");
    }
    Ok(host)
}

/// The server's kubeconfig, read over SSH with the program `ssh`. ssh's own messages (host
/// key, errors) go to the terminal; only the file comes back on its standard output.
pub fn fetch(ssh: &Path, port: u16, destination: &str) -> Result<Zeroizing<Vec<u8>>> {
    let port = port.to_string();
    let output = Program::new(ssh)
        .args(["-p", &port, "--", destination])
        .args(["sudo", "-n", "cat", REMOTE_KUBECONFIG])
        .interactive()
        .output()
        .with_context(|| format!("running {}", ssh.display()))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        bail!(
            "`{} -p {port} {destination} sudo -n cat {REMOTE_KUBECONFIG}` failed ({}): see its messages above; the user needs SSH access (ssh_allowed_cidrs) and passwordless sudo",
            ssh.display(),
            output.status
        );
    }
    Ok(stdout)
}

/// Only what the rewrite needs; every other field (the credentials) is skipped unread.
#[derive(Deserialize)]
struct Kubeconfig {
    kind: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
}

/// A kubeconfig pointed at another host.
pub struct Rewritten {
    pub contents: Zeroizing<Vec<u8>>,
    /// The new server URLs, for the message.
    pub servers: Vec<String>,
}

impl std::fmt::Debug for Rewritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewritten")
            .field("contents", &"[REDACTED]")
            .field("servers", &self.servers)
            .finish()
    }
}

/// Points every cluster's `server:` at `host`, keeping scheme and port.
pub fn rewrite_servers(kubeconfig: &[u8], host: &str) -> Result<Rewritten> {
    let text = std::str::from_utf8(kubeconfig).context("it is not UTF-8 text")?;
    // serde's messages can quote values; report the position only.
    let parsed: Kubeconfig = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
        Some(at) => anyhow::anyhow!(
            "it is not a kubeconfig (at line {}, column {})",
            at.line(),
            at.column()
        ),
        None => anyhow::anyhow!("it is not a kubeconfig"),
    })?;
    if parsed.kind.as_deref() != Some("Config") || parsed.clusters.is_empty() {
        bail!("it is not a kubeconfig with clusters (kind: Config)");
    }
    let mut servers = Vec::new();
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 64));
    let mut replaced = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start().len();
        let value = body
            .trim_start()
            .strip_prefix("server:")
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''));
        match value {
            Some(old) if parsed.clusters.iter().any(|c| c.cluster.server == old) => {
                let new = server_url(old, host)?;
                out.push_str(&body[..indent]);
                out.push_str("server: ");
                out.push_str(&new);
                out.push_str(&line[body.len()..]);
                servers.push(new);
                replaced += 1;
            }
            _ => out.push_str(line),
        }
    }
    if replaced != parsed.clusters.len() {
        bail!(
            "found {replaced} of its {} server: lines to rewrite",
            parsed.clusters.len()
        );
    }
    servers.dedup();
    Ok(Rewritten {
        contents: Zeroizing::new(std::mem::take(&mut *out).into_bytes()),
        servers,
    })
}

fn server_url(old: &str, host: &str) -> Result<String> {
    let mut url = url::Url::parse(old).with_context(|| format!("server {old:?} is not a URL"))?;
    url.set_host(Some(host))
        .with_context(|| format!("{host:?} is not a host name or IP address"))?;
    // Url keeps a bare origin as "https://host:6443/"; kubeconfigs carry no path.
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Writes `kubeconfig` to `out` (mode 0600, replaced atomically); returns the absolute path
/// and what the write did.
pub fn save(out: &Path, kubeconfig: &Rewritten) -> Result<(PathBuf, WriteOutcome)> {
    let out = std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
    let outcome = fsutil::write_if_changed(&out, &kubeconfig.contents, 0o600)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok((out, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RKE2_YAML: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EtREFUQQ==\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZLXNlY3JldA==\n";

    #[test]
    fn only_the_server_line_changes() {
        let r = rewrite_servers(RKE2_YAML.as_bytes(), "20.30.40.50").unwrap();
        let text = std::str::from_utf8(&r.contents).unwrap();
        assert_eq!(
            text,
            RKE2_YAML.replace(
                "server: https://127.0.0.1:6443",
                "server: https://20.30.40.50:6443"
            )
        );
        assert_eq!(r.servers, vec!["https://20.30.40.50:6443"]);
        let named = rewrite_servers(RKE2_YAML.as_bytes(), "api.k8s.example.com").unwrap();
        assert!(std::str::from_utf8(&named.contents)
            .unwrap()
            .contains("    server: https://api.k8s.example.com:6443\n"));
    }

    #[test]
    fn anything_else_is_refused_without_quoting_it() {
        for bad in [
            "sudo: a password is required\n",
            "kind: Config\nclusters: []\n",
            "kind: Config\nclusters:\n- cluster: {}\n  name: x\nusers: S0VZLXNlY3JldA==\n",
            "kind: Pod\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n",
        ] {
            let err = rewrite_servers(bad.as_bytes(), "20.30.40.50").unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("not a kubeconfig"), "{msg}");
            assert!(!msg.contains("S0VZ") && !msg.contains("password"), "{msg}");
        }
        assert!(rewrite_servers(RKE2_YAML.as_bytes(), "not a host").is_err());
    }

    #[test]
    fn destinations_that_ssh_would_take_for_options_are_refused() {
        assert_eq!(
            destination_host("canarie@20.30.40.50").unwrap(),
            "20.30.40.50"
        );
        assert_eq!(destination_host("cp-01").unwrap(), "cp-01");
        for bad in ["-oProxyCommand=x", "a b@c", "user@", ""] {
            assert!(destination_host(bad).is_err(), "{bad:?}");
        }
    }
}
