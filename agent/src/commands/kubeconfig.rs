//! `canarie-agent kubeconfig DESTINATION --out FILE`: the cluster-admin kubeconfig for an
//! operator's machine.
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

use crate::cli::exit;
use crate::fsutil::{self, WriteOutcome};
use crate::subprocess::Program;
use anyhow::{bail, Context, Result};
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;
use std::path::PathBuf;

/// Where RKE2 writes the admin kubeconfig on a server.
pub const REMOTE_KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";

#[derive(Debug, Clone, clap::Args)]
pub struct KubeconfigArgs {
    /// The server over SSH, `USER@HOST` (`tofu output -raw kubeconfig_command` prints the
    /// whole command for cp-01 through the load balancer).
    pub destination: String,
    /// SSH port (the load balancer forwards 2200 to cp-01).
    #[arg(long, default_value_t = 22)]
    pub ssh_port: u16,
    /// Host name or IP address for the `server:` URLs; default: the host of DESTINATION.
    /// It must be in the API certificate's SANs (the load balancer's IP and api.<zone> are).
    #[arg(long, value_name = "HOST")]
    pub api_server: Option<String>,
    /// Where to write the kubeconfig (mode 0600, replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The ssh program to run.
    #[arg(long, value_name = "PROGRAM", default_value = "ssh")]
    pub ssh: PathBuf,
}

/// Exit codes: 0 written, 1 the server's answer is not a kubeconfig or an argument is bad,
/// 2 ssh or the write failed.
pub fn run(args: &KubeconfigArgs) -> i32 {
    let host = match destination_host(&args.destination) {
        Ok(h) => h,
        Err(e) => return fail(exit::FAILED, &e),
    };
    let api_host = args.api_server.as_deref().unwrap_or(host);
    let remote = match fetch(args) {
        Ok(bytes) => bytes,
        Err(e) => return fail(exit::ERROR, &e),
    };
    let rewritten = match rewrite_servers(&remote, api_host) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                exit::FAILED,
                &e.context(format!(
                    "{REMOTE_KUBECONFIG} from {} is not usable",
                    args.destination
                )),
            )
        }
    };
    let out = match std::path::absolute(&args.out)
        .with_context(|| format!("resolving {}", args.out.display()))
    {
        Ok(p) => p,
        Err(e) => return fail(exit::ERROR, &e),
    };
    match fsutil::write_if_changed(&out, &rewritten.contents, 0o600) {
        Ok(outcome) => {
            let what = match outcome {
                WriteOutcome::Unchanged => "unchanged",
                WriteOutcome::Created => "written",
                WriteOutcome::Updated => "updated",
            };
            println!(
                "{} {what} (server {}): export KUBECONFIG={}",
                out.display(),
                rewritten.servers.join(", "),
                out.display()
            );
            exit::OK
        }
        Err(e) => fail(
            exit::ERROR,
            &e.context(format!("writing {}", out.display())),
        ),
    }
}

fn fail(code: i32, e: &anyhow::Error) -> i32 {
    super::report_error("kubeconfig", e);
    code
}

/// The host part of `[USER@]HOST`; refuses what ssh would read as an option.
fn destination_host(destination: &str) -> Result<&str> {
    let host = destination.rsplit_once('@').map_or(destination, |(_, h)| h);
    if destination.starts_with('-')
        || host.is_empty()
        || destination.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        bail!("{destination:?} is not an SSH destination: expected USER@HOST, e.g. canarie@20.30.40.50");
    }
    Ok(host)
}

/// The server's kubeconfig, read over SSH. ssh's own messages (host key, errors) go to the
/// terminal; only the file comes back on its standard output.
fn fetch(args: &KubeconfigArgs) -> Result<Zeroizing<Vec<u8>>> {
    let port = args.ssh_port.to_string();
    let output = Program::new(&args.ssh)
        .args(["-p", &port, "--", &args.destination])
        .args(["sudo", "-n", "cat", REMOTE_KUBECONFIG])
        .interactive()
        .output()
        .with_context(|| format!("running {}", args.ssh.display()))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        bail!(
            "`{} -p {port} {} sudo -n cat {REMOTE_KUBECONFIG}` failed ({}): see its messages above; the user needs SSH access (ssh_allowed_cidrs) and passwordless sudo",
            args.ssh.display(),
            args.destination,
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

struct Rewritten {
    contents: Zeroizing<Vec<u8>>,
    /// The new server URLs, for the message.
    servers: Vec<String>,
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
fn rewrite_servers(kubeconfig: &[u8], host: &str) -> Result<Rewritten> {
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
