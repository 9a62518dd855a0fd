//! Where the desired state comes from: the node config (a file, IMDS userData or the last
//! converged copy) and the secrets (Key Vault through the managed identity, one token per run).

use super::{state, Context};
use crate::azure::{AccessToken, ImdsClient, KeyVaultClient, SecretValue, VAULT_RESOURCE};
use crate::config::{self, ConfigSource, JoinTokenConfig, NodeConfig};
use crate::paths::Root;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, OnceCell};

/// The node config was read but is not valid: the operator must fix it; no fallback applies.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// A failed read of the Key Vault secret that config entry `entry` names: the context the
/// step adds, which the run's record keeps for doctor (see [`SecretFailure`]).
///
/// [`SecretFailure`]: crate::reconcile::state::SecretFailure
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading {entry} (secret {secret:?} in vault {vault:?})")]
pub struct SecretRead {
    /// The node config entry (`cluster_secrets.grafana_admin`).
    pub entry: String,
    pub secret: String,
    pub vault: String,
}

/// Where the node config may come from, in order. [`load_config`] reads them for bootstrap,
/// plan and doctor alike.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSources<'a> {
    /// `--config FILE`: when given, the only source.
    pub file: Option<&'a Path>,
    /// IMDS userData; `None` when IMDS is already known not to answer (doctor's `imds` check).
    pub imds: Option<&'a ImdsClient>,
    /// The last converged copy under this root, read when IMDS does not answer; `None`: no
    /// fallback (a node that never converged).
    pub last_converged: Option<&'a Root>,
}

/// A node config and where it came from.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: NodeConfig,
    pub source: ConfigSource,
    /// Why IMDS was not used, when the config is the last converged copy: IMDS's error, or
    /// `None` when it was known not to answer.
    pub imds_error: Option<anyhow::Error>,
}

/// IMDS did not answer and there is no last converged config to fall back on: the context
/// of the error reading that copy.
#[derive(Debug, thiserror::Error)]
#[error("IMDS is unreachable ({}) and the last converged config cannot be read", .imds_error.as_ref().map_or_else(String::new, |e| format!("{e:#}")))]
pub struct NoConfig {
    /// IMDS's error, or `None` when it was known not to answer.
    pub imds_error: Option<anyhow::Error>,
}

/// Reads the node config: from the file when one is given, else from IMDS userData, else
/// (IMDS does not answer, and a fallback is allowed) from the last converged copy. A config
/// that was read but is invalid is an error ([`InvalidConfig`] for userData): it is never
/// papered over with the old copy. Without any config the error carries [`NoConfig`].
pub async fn load_config(sources: ConfigSources<'_>) -> Result<LoadedConfig> {
    let loaded = |(config, source)| LoadedConfig {
        config,
        source,
        imds_error: None,
    };
    if let Some(path) = sources.file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the node config file {}", path.display()))?;
        let cfg = config::parse(&bytes).map_err(|e| {
            anyhow::anyhow!("the node config in {} is invalid at {e}", path.display())
        })?;
        return Ok(loaded((cfg, ConfigSource::File(path.to_path_buf()))));
    }
    let imds_error = match sources.imds {
        Some(imds) => match imds.user_data().await {
            Ok(text) => {
                let cfg = config::parse_user_data(&text).map_err(|e| {
                    InvalidConfig(format!(
                        "the node config in IMDS userData is invalid at {e}; fix the VM's user_data (infra-tofu) and reboot or restart canarie-agent"
                    ))
                })?;
                return Ok(loaded((cfg, ConfigSource::ImdsUserData)));
            }
            Err(e) => Some(e.context("reading the node config from IMDS userData")),
        },
        None => None,
    };
    let Some(root) = sources.last_converged else {
        return Err(imds_error.unwrap_or_else(|| anyhow::anyhow!("IMDS is unreachable")));
    };
    match state::load_last_config(root) {
        Ok((config, source)) => Ok(LoadedConfig {
            config,
            source,
            imds_error,
        }),
        Err(e) => Err(e.context(NoConfig { imds_error })),
    }
}

/// A cached token is used while it stays valid for at least this long.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// Key Vault as one run reads it: the clients built once, and one managed-identity token
/// for every read (the join token and each cluster secret), asked for by the first read and
/// kept while it is valid. Nothing is fetched until a step reads.
pub struct KeyVault<'a> {
    cx: &'a Context,
    jt: &'a JoinTokenConfig,
    /// The node converged before: the short deadlines of a boot that may fall back.
    may_fall_back: bool,
    clients: OnceCell<(ImdsClient, KeyVaultClient)>,
    token: Mutex<Option<AccessToken>>,
}

impl<'a> KeyVault<'a> {
    /// Reads with the identity and vault of `jt` (the join token's, which the cluster
    /// secrets share).
    pub fn new(cx: &'a Context, jt: &'a JoinTokenConfig, may_fall_back: bool) -> Self {
        KeyVault {
            cx,
            jt,
            may_fall_back,
            clients: OnceCell::new(),
            token: Mutex::new(None),
        }
    }

    async fn clients(&self) -> Result<&(ImdsClient, KeyVaultClient)> {
        self.clients
            .get_or_try_init(|| async {
                Ok((
                    self.cx.imds(self.may_fall_back)?,
                    self.cx.vault(self.may_fall_back)?,
                ))
            })
            .await
    }

    /// The run's managed-identity token for Key Vault: IMDS is asked once, and again only
    /// when the token is about to expire (or an earlier attempt failed).
    pub async fn token(&self) -> Result<AccessToken> {
        let mut cached = self.token.lock().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(token) = cached
            .as_ref()
            .filter(|t| t.expires_on > now + TOKEN_MARGIN.as_secs())
        {
            return Ok(token.clone());
        }
        let (imds, _) = self.clients().await?;
        let token = imds
            .token(VAULT_RESOURCE, self.jt.identity.as_ref())
            .await
            .context("getting a managed-identity token for Key Vault")?;
        tracing::info!(
            expires_on = token.expires_on,
            "managed-identity token obtained"
        );
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Reads `secret` from the vault with the run's token.
    pub async fn read(&self, secret: &str) -> Result<SecretValue> {
        let token = self.token().await?;
        let (_, vault) = self.clients().await?;
        vault
            .get_secret(
                &self.jt.vault,
                secret,
                &token,
                Duration::from_secs(self.jt.rbac_wait_seconds),
            )
            .await
    }

    /// The RKE2 join token (`join_token.secret`), which must not be empty.
    pub async fn join_token(&self) -> Result<SecretValue> {
        let jt = self.jt;
        // A token failure reads as such, not as a failed read of the secret.
        self.token().await?;
        let secret = self
            .read(&jt.secret)
            .await
            .context("reading the RKE2 join token from Key Vault")?;
        anyhow::ensure!(
            !secret.is_empty(),
            "the join token secret {:?} in vault {:?} is empty: set it (infra-tofu stores a random_password there)",
            jt.secret,
            jt.vault
        );
        tracing::info!(vault = %jt.vault, secret = %jt.secret, version = %secret.version, length = secret.len(), "join token read");
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &[u8] = br#"{"version": 1, "role": "server", "node_name": "cp-01", "cluster": {},
        "join_token": {"vault": "kv-canarie", "secret": "tok"}}"#;

    #[tokio::test]
    async fn the_file_wins_and_the_last_converged_copy_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let file = dir.path().join("node.json");
        std::fs::write(&file, CONFIG).unwrap();
        let from_file = load_config(ConfigSources {
            file: Some(&file),
            imds: None,
            last_converged: Some(&root),
        })
        .await
        .unwrap();
        assert_eq!(from_file.source, ConfigSource::File(file.clone()));

        // IMDS known down, no copy yet: NoConfig names both.
        let sources = ConfigSources {
            file: None,
            imds: None,
            last_converged: Some(&root),
        };
        let err = load_config(sources).await.unwrap_err();
        assert!(err.downcast_ref::<NoConfig>().is_some(), "{err:#}");

        state::save_last_config(&root, &from_file.config).unwrap();
        let fallback = load_config(sources).await.unwrap();
        assert_eq!(fallback.source.id(), "last_converged");
        assert!(fallback.imds_error.is_none());
        assert_eq!(fallback.config, from_file.config);

        // No fallback allowed (a node that never converged): IMDS's error.
        let err = load_config(ConfigSources {
            last_converged: None,
            ..sources
        })
        .await
        .unwrap_err();
        assert!(err.downcast_ref::<NoConfig>().is_none(), "{err:#}");
    }
}
