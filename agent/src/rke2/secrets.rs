//! The cluster's Kubernetes Secrets, seeded from Key Vault into RKE2's manifests directory.
//!
//! The node config's `cluster_secrets` says which exist; each names the Key Vault secret
//! that holds its secret part, everything else (user names, tenant and subscription ids) is
//! plain config. [`declared`] lists them for the reconciler, which reads the values with the
//! node's managed identity; [`render_cluster_secrets`] turns the values into one manifest
//! file per Secret ([`SecretFile`]: 0600, redacted `Debug`, zeroed on drop).
//!
//! Rendering is deterministic, so a file changes exactly when its value changes and RKE2's
//! deploy controller re-applies it then and only then. The one hash involved, the Longhorn
//! UI's bcrypt htpasswd entry, takes its salt from the Key Vault secret's version id rather
//! than from a random source: the same version always gives the same bytes, a new version
//! (every rotation) a new salt.
//!
//! Values go into `data` (base64), which is what the API server stores, so an applied
//! manifest and the live object compare equal. A Secret whose namespace no seeded chart
//! creates (monitoring, external-dns) is written together with its Namespace, so it does not
//! wait for Fleet; `fleet-local` is Fleet's and `longhorn-system` the Longhorn chart's.

use super::yaml;
use crate::config::NodeConfig;
use crate::nodefile::{Effect, SecretFile};
use crate::paths::RKE2_MANIFESTS_DIR;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Secrets are only for root to read, like every file RKE2 reads.
const SECRET_MODE: u32 = 0o600;

/// The Secret Traefik's basic-auth Middleware reads the Longhorn UI's htpasswd from.
pub const LONGHORN_UI_AUTH_SECRET: &str = "longhorn-ui-auth";
pub const LONGHORN_NAMESPACE: &str = "longhorn-system";

/// bcrypt cost of the Longhorn UI's htpasswd entry. Traefik verifies the hash on every
/// request, so the cost is paid per request: 10 (about 1k rounds, tens of milliseconds) is
/// htpasswd's range rather than a login form's 12+. The password itself is random
/// (OpenTofu's random_password), which is what makes it strong.
const HTPASSWD_BCRYPT_COST: u32 = 10;

/// One kind of cluster secret: which config entry declares it and which Secret it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    GitAuth,
    GrafanaAdmin,
    LonghornUiAuth,
    ExternalDnsAzure,
}

impl SecretKind {
    /// Every kind, in write order.
    pub const ALL: [SecretKind; 4] = [
        SecretKind::GitAuth,
        SecretKind::GrafanaAdmin,
        SecretKind::LonghornUiAuth,
        SecretKind::ExternalDnsAzure,
    ];

    /// Where the node config declares it.
    pub fn config_path(self) -> &'static str {
        match self {
            SecretKind::GitAuth => "cluster_secrets.git_auth",
            SecretKind::GrafanaAdmin => "cluster_secrets.grafana_admin",
            SecretKind::LonghornUiAuth => "cluster_secrets.longhorn_ui_auth",
            SecretKind::ExternalDnsAzure => "cluster_secrets.external_dns_azure",
        }
    }

    /// The manifest's file name: `canarie-secret-*`, so the files holding secrets are
    /// recognisable at a glance (and by a glob).
    pub fn file_name(self) -> &'static str {
        match self {
            SecretKind::GitAuth => "canarie-secret-git-auth.yaml",
            SecretKind::GrafanaAdmin => "canarie-secret-grafana-admin.yaml",
            SecretKind::LonghornUiAuth => "canarie-secret-longhorn-ui-auth.yaml",
            SecretKind::ExternalDnsAzure => "canarie-secret-external-dns-azure.yaml",
        }
    }

    /// The manifest's path on the node.
    pub fn node_path(self) -> PathBuf {
        Path::new(RKE2_MANIFESTS_DIR).join(self.file_name())
    }

    /// The Kubernetes Secret's namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            SecretKind::GitAuth => "fleet-local",
            SecretKind::GrafanaAdmin => "monitoring",
            SecretKind::LonghornUiAuth => LONGHORN_NAMESPACE,
            SecretKind::ExternalDnsAzure => "external-dns",
        }
    }

    /// Whether the file also creates the namespace (nothing seeded before Fleet does).
    fn seeds_namespace(self) -> bool {
        matches!(
            self,
            SecretKind::GrafanaAdmin | SecretKind::ExternalDnsAzure
        )
    }
}

/// A cluster secret the node config declares: its kind and the Key Vault secret's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredSecret<'a> {
    pub kind: SecretKind,
    pub secret: &'a str,
}

/// The cluster secrets `config` declares, in write order (none on agents).
pub fn declared(config: &NodeConfig) -> Vec<DeclaredSecret<'_>> {
    let Some(cs) = &config.cluster_secrets else {
        return Vec::new();
    };
    SecretKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let secret = match kind {
                SecretKind::GitAuth => cs.git_auth.as_ref().map(|s| s.secret.as_str()),
                SecretKind::GrafanaAdmin => cs.grafana_admin.as_ref().map(|s| s.secret.as_str()),
                SecretKind::LonghornUiAuth => {
                    cs.longhorn_ui_auth.as_ref().map(|s| s.secret.as_str())
                }
                SecretKind::ExternalDnsAzure => {
                    cs.external_dns_azure.as_ref().map(|s| s.secret.as_str())
                }
            }?;
            Some(DeclaredSecret { kind, secret })
        })
        .collect()
}

/// A value read from Key Vault for one declared secret (by the reconciler: rendering never
/// talks to Azure).
#[derive(Debug)]
pub struct FetchedSecret {
    pub kind: SecretKind,
    /// The Key Vault secret's name (for messages and the file header).
    pub secret: String,
    pub value: SecretString,
    /// The Key Vault secret's version id.
    pub version: String,
}

/// One Secret manifest per fetched secret, in the order given.
pub fn render_cluster_secrets(
    config: &NodeConfig,
    fetched: &[FetchedSecret],
) -> Result<Vec<SecretFile>> {
    fetched
        .iter()
        .map(|f| {
            render_one(config, f).with_context(|| {
                format!(
                    "rendering the Secret of {} (Key Vault secret {:?})",
                    f.kind.config_path(),
                    f.secret
                )
            })
        })
        .collect()
}

/// The Secret's name, type and data entries (key, value to be base64-encoded).
struct SecretBody {
    name: String,
    kind: &'static str,
    data: Vec<(&'static str, Zeroizing<String>)>,
}

fn render_one(config: &NodeConfig, f: &FetchedSecret) -> Result<SecretFile> {
    let value = f.value.expose_secret();
    if value.is_empty() {
        bail!("the secret is empty: set it in Key Vault (infra-tofu stores it)");
    }
    let cs = config
        .cluster_secrets
        .as_ref()
        .context("the node config declares no cluster_secrets")?;
    let missing = || format!("the node config does not declare {}", f.kind.config_path());
    let body = match f.kind {
        SecretKind::GitAuth => {
            let git = cs.git_auth.as_ref().with_context(missing)?;
            let name = config
                .cluster
                .git_repo
                .as_ref()
                .and_then(|r| r.auth_secret.clone())
                .context(
                    "cluster.git_repo.auth_secret names the git credentials Secret and is not set",
                )?;
            SecretBody {
                // The GitRepo's clientSecretName is the same field: one name, one place.
                name,
                // The type Fleet documents for HTTPS credentials.
                kind: "kubernetes.io/basic-auth",
                data: vec![
                    ("password", Zeroizing::new(value.to_string())),
                    ("username", Zeroizing::new(git.username.clone())),
                ],
            }
        }
        SecretKind::GrafanaAdmin => {
            let login = cs.grafana_admin.as_ref().with_context(missing)?;
            // Keys as the monitoring bundle's grafana.admin.{userKey,passwordKey} expect.
            SecretBody {
                name: "grafana-admin".into(),
                kind: "Opaque",
                data: vec![
                    ("admin-password", Zeroizing::new(value.to_string())),
                    ("admin-user", Zeroizing::new(login.username.clone())),
                ],
            }
        }
        SecretKind::LonghornUiAuth => {
            let login = cs.longhorn_ui_auth.as_ref().with_context(missing)?;
            let line = htpasswd_line(&login.username, value, &f.secret, &f.version)?;
            // Traefik's basicAuth reads the htpasswd lines of the Secret's only key (it
            // refuses a Secret with more than one); `auth` is the name htpasswd tools use.
            SecretBody {
                name: LONGHORN_UI_AUTH_SECRET.into(),
                kind: "Opaque",
                data: vec![("auth", line)],
            }
        }
        SecretKind::ExternalDnsAzure => {
            let dns = cs.external_dns_azure.as_ref().with_context(missing)?;
            SecretBody {
                name: "external-dns-azure".into(),
                kind: "Opaque",
                data: vec![("azure.json", azure_json(dns, value)?)],
            }
        }
    };
    Ok(SecretFile::new(
        f.kind.node_path(),
        secret_manifest(f, &body),
        SECRET_MODE,
        Effect::AppliedByRke2,
    ))
}

/// external-dns's Azure provider config (`/etc/kubernetes/azure.json`): a service principal.
fn azure_json(
    dns: &crate::config::ExternalDnsAzureSecret,
    client_secret: &str,
) -> Result<Zeroizing<String>> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AzureJson<'a> {
        tenant_id: &'a str,
        subscription_id: &'a str,
        resource_group: &'a str,
        aad_client_id: &'a str,
        aad_client_secret: &'a str,
    }
    let json = serde_json::to_string(&AzureJson {
        tenant_id: &dns.tenant_id,
        subscription_id: &dns.subscription_id,
        resource_group: &dns.resource_group,
        aad_client_id: &dns.client_id,
        aad_client_secret: client_secret,
    })
    .context("serializing azure.json")?;
    Ok(Zeroizing::new(json))
}

/// One htpasswd line, `user:$2y$10$…`, with a salt derived from the Key Vault secret's
/// name and version: stable while the version is, new with every rotation.
fn htpasswd_line(
    username: &str,
    password: &str,
    secret: &str,
    version: &str,
) -> Result<Zeroizing<String>> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"canarie-agent htpasswd salt\0")
        .chain_update(secret.as_bytes())
        .chain_update(b"\0")
        .chain_update(version.as_bytes())
        .finalize();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    // bcrypt reads at most 72 bytes; refuse rather than silently ignore the rest.
    let parts = bcrypt::non_truncating_hash_with_salt(password, HTPASSWD_BCRYPT_COST, salt)
        .map_err(|e| match e {
            bcrypt::BcryptError::Truncation(_) => {
                anyhow::anyhow!("the password is longer than bcrypt's 72 bytes: use a shorter one")
            }
            other => anyhow::anyhow!("bcrypt failed: {other}"),
        })?;
    // $2y$ is what `htpasswd -B` writes; Traefik (Go's bcrypt) reads it.
    let mut line = Zeroizing::new(String::with_capacity(username.len() + 62));
    line.push_str(username);
    line.push(':');
    line.push_str(&parts.format_for_version(bcrypt::Version::TwoY));
    line.push('\n');
    Ok(line)
}

/// The manifest text: the Namespace when the kind seeds one, then the Secret. Non-secret
/// strings are double-quoted by the YAML writer's rules; the data values are base64.
fn secret_manifest(f: &FetchedSecret, body: &SecretBody) -> SecretString {
    let q = yaml::double_quoted;
    let ns = f.kind.namespace();
    let mut out = String::new();
    let _ = write!(
        out,
        "# Written by canarie-agent from Key Vault secret {} ({}).\n\
         # Changes made here are overwritten: change the secret in Key Vault (docs/day2.md).\n",
        q(&f.secret),
        f.kind.config_path()
    );
    if f.kind.seeds_namespace() {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n---\n",
            q(ns)
        );
    }
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    app.kubernetes.io/managed-by: \"canarie-agent\"\ntype: {}\ndata:\n",
        q(&body.name),
        q(ns),
        q(body.kind)
    );
    let engine = base64::engine::general_purpose::STANDARD;
    // Sized up front so the secret-bearing text is never reallocated (no stray copies).
    let data_len: usize = body
        .data
        .iter()
        .map(|(k, v)| k.len() + 8 + base64::encoded_len(v.len(), true).unwrap_or(0))
        .sum();
    let mut secret_text = String::with_capacity(out.len() + data_len);
    secret_text.push_str(&out);
    for (key, value) in &body.data {
        secret_text.push_str("  ");
        secret_text.push_str(key);
        secret_text.push_str(": \"");
        engine.encode_string(value.as_bytes(), &mut secret_text);
        secret_text.push_str("\"\n");
    }
    SecretString::from(secret_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    /// The example server, with a login name that is not the default.
    fn server() -> NodeConfig {
        let mut c = config::parse(config::EXAMPLE_SERVER_WITH_SECRETS.as_bytes()).unwrap();
        let longhorn = c
            .cluster_secrets
            .as_mut()
            .unwrap()
            .longhorn_ui_auth
            .as_mut();
        longhorn.unwrap().username = "ops".into();
        c
    }

    fn fetched(kind: SecretKind, value: &str, version: &str) -> FetchedSecret {
        FetchedSecret {
            kind,
            secret: format!("{kind:?}"),
            value: SecretString::from(value),
            version: version.into(),
        }
    }

    fn docs(file: &SecretFile) -> Vec<serde_yaml_ng::Value> {
        use serde::Deserialize;
        let text = std::str::from_utf8(file.expose_contents()).unwrap();
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
            .collect()
    }

    fn data(doc: &serde_yaml_ng::Value, key: &str) -> String {
        let b64 = doc["data"][key].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn declared_lists_each_configured_kind_in_order() {
        let c = server();
        let kinds: Vec<_> = declared(&c).iter().map(|d| (d.kind, d.secret)).collect();
        assert_eq!(
            kinds,
            vec![
                (SecretKind::GitAuth, "git-token"),
                (SecretKind::GrafanaAdmin, "grafana-admin-password"),
                (SecretKind::LonghornUiAuth, "longhorn-ui-password"),
                (SecretKind::ExternalDnsAzure, "external-dns-client-secret"),
            ]
        );
    }

    #[test]
    fn each_kind_renders_its_secret_with_the_right_keys() {
        let c = server();
        let all: Vec<_> = SecretKind::ALL
            .into_iter()
            .map(|k| fetched(k, "s3cr3t-value", "v1"))
            .collect();
        let files = render_cluster_secrets(&c, &all).unwrap();
        assert_eq!(files.len(), 4);
        for f in &files {
            assert_eq!(f.mode, 0o600);
            assert_eq!(f.effect, Effect::AppliedByRke2);
            assert!(
                !format!("{f:?}").contains("s3cr3t"),
                "Debug shows the value"
            );
        }

        let git = docs(&files[0]);
        assert_eq!(git.len(), 1);
        assert_eq!(git[0]["metadata"]["name"], "canarie-kube-auth");
        assert_eq!(git[0]["metadata"]["namespace"], "fleet-local");
        assert_eq!(git[0]["type"], "kubernetes.io/basic-auth");
        assert_eq!(data(&git[0], "username"), "x-access-token");
        assert_eq!(data(&git[0], "password"), "s3cr3t-value");

        let grafana = docs(&files[1]);
        assert_eq!(grafana[0]["kind"], "Namespace");
        assert_eq!(grafana[0]["metadata"]["name"], "monitoring");
        assert_eq!(grafana[1]["metadata"]["name"], "grafana-admin");
        assert_eq!(data(&grafana[1], "admin-user"), "admin");
        assert_eq!(data(&grafana[1], "admin-password"), "s3cr3t-value");

        let longhorn = docs(&files[2]);
        assert_eq!(
            longhorn.len(),
            1,
            "longhorn-system is the chart's namespace"
        );
        assert_eq!(longhorn[0]["metadata"]["namespace"], "longhorn-system");
        let auth = data(&longhorn[0], "auth");
        let (user, hash) = auth.trim_end().split_once(':').unwrap();
        assert_eq!(user, "ops");
        assert!(hash.starts_with("$2y$10$"), "{hash}");
        assert!(bcrypt::verify("s3cr3t-value", hash).unwrap());
        assert!(!auth.contains("s3cr3t"));

        let dns = docs(&files[3]);
        assert_eq!(dns[0]["metadata"]["name"], "external-dns");
        assert_eq!(dns[1]["metadata"]["name"], "external-dns-azure");
        let json: serde_json::Value = serde_json::from_str(&data(&dns[1], "azure.json")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "tenantId": "11111111-2222-3333-4444-555555555555",
                "subscriptionId": "66666666-7777-8888-9999-000000000000",
                "resourceGroup": "canarie-rg",
                "aadClientId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                "aadClientSecret": "s3cr3t-value"
            })
        );
    }

    #[test]
    fn rendering_is_deterministic_and_the_htpasswd_salt_follows_the_version() {
        let c = server();
        let render = |value: &str, version: &str| {
            let f =
                render_cluster_secrets(&c, &[fetched(SecretKind::LonghornUiAuth, value, version)])
                    .unwrap();
            f[0].expose_contents().to_vec()
        };
        assert_eq!(render("pw", "v1"), render("pw", "v1"));
        assert_ne!(
            render("pw", "v1"),
            render("pw", "v2"),
            "a new version, a new salt"
        );
        assert_ne!(render("pw", "v1"), render("other", "v1"));
    }

    #[test]
    fn empty_and_overlong_values_are_refused_without_showing_them() {
        let c = server();
        let err =
            render_cluster_secrets(&c, &[fetched(SecretKind::GrafanaAdmin, "", "v1")]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cluster_secrets.grafana_admin") && msg.contains("empty"),
            "{msg}"
        );

        let long = "p".repeat(80);
        let err = render_cluster_secrets(&c, &[fetched(SecretKind::LonghornUiAuth, &long, "v1")])
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("72 bytes") && !msg.contains(&long), "{msg}");
    }

    #[test]
    fn yaml_special_values_stay_strings() {
        // A password that YAML 1.1 would read as a boolean or a number is base64 in `data`,
        // and the user names are quoted by the writer.
        let c = server();
        let files =
            render_cluster_secrets(&c, &[fetched(SecretKind::GitAuth, "yes", "v1")]).unwrap();
        let doc = &docs(&files[0])[0];
        assert_eq!(data(doc, "password"), "yes");
    }
}
