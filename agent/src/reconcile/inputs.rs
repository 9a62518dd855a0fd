//! Where the desired state comes from: the node config (a file or IMDS userData) and the
//! join token (Key Vault through the managed identity).

use crate::azure::{ImdsClient, KeyVaultClient, SecretValue, VAULT_RESOURCE};
use crate::config::{self, ConfigSource, JoinTokenConfig, NodeConfig};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

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

/// Reads the node config from `file` when given, else from IMDS userData.
pub async fn load_config(
    file: Option<&Path>,
    imds: &ImdsClient,
) -> Result<(NodeConfig, ConfigSource)> {
    match file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the node config file {}", path.display()))?;
            let cfg = config::parse(&bytes).map_err(|e| {
                anyhow::anyhow!("the node config in {} is invalid at {e}", path.display())
            })?;
            Ok((cfg, ConfigSource::File(path.to_path_buf())))
        }
        None => {
            let text = imds
                .user_data()
                .await
                .context("reading the node config from IMDS userData")?;
            let cfg = config::parse_user_data(&text).map_err(|e| {
                InvalidConfig(format!(
                    "the node config in IMDS userData is invalid at {e}; fix the VM's user_data (infra-tofu) and reboot or restart canarie-agent"
                ))
            })?;
            Ok((cfg, ConfigSource::ImdsUserData))
        }
    }
}

/// Gets a managed-identity token and reads the join token secret with it.
pub async fn fetch_join_token(
    imds: &ImdsClient,
    vault: &KeyVaultClient,
    jt: &JoinTokenConfig,
) -> Result<SecretValue> {
    let token = imds
        .token(VAULT_RESOURCE, jt.identity.as_ref())
        .await
        .context("getting a managed-identity token for Key Vault")?;
    tracing::info!(
        expires_on = token.expires_on,
        "managed-identity token obtained"
    );
    let secret = vault
        .get_secret(
            &jt.vault,
            &jt.secret,
            &token,
            Duration::from_secs(jt.rbac_wait_seconds),
        )
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
