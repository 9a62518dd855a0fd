//! Step `cluster-secrets` (servers): the Secrets the cluster needs, read from Key Vault with
//! the node's managed identity and written into RKE2's manifests directory, where its deploy
//! controller applies them. Which secrets exist is the node config's `cluster_secrets`; a
//! node without any skips the step and never talks to Azure for it.
//!
//! The run's one managed-identity token serves every read ([`KeyVault`]); each read uses the Key Vault client's retry
//! policy (and `join_token.rbac_wait_seconds` for a propagating role assignment). A missing
//! or empty secret fails the step, naming the config entry, the secret and the vault. On a
//! node that converged before, an unreachable IMDS or Key Vault keeps the Secret files it
//! has (like the join token), so an Azure outage never keeps a rebooted server down.
//!
//! The step owns one file name per kind of secret ([`SecretKind::ALL`]): the file of a kind
//! the config no longer declares is removed (no Azure needed for that), so secret material
//! does not outlive its config entry on the node. Any other file in the directory is not
//! the step's.

use crate::config::NodeConfig;
use crate::nodefile::{self, SecretFile};
use crate::reconcile::change::{self, file_change, Change};
use crate::reconcile::inputs::{KeyVault, SecretRead};
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use crate::rke2;
use crate::rke2::secrets::{DeclaredSecret, FetchedSecret, SecretKind};
use anyhow::{Context as _, Result};
use std::path::PathBuf;

pub struct ClusterSecretsStep<'a> {
    cx: &'a Context,
    config: &'a NodeConfig,
    vault: &'a KeyVault<'a>,
    may_fall_back: bool,
    /// The files `plan` found out of date.
    stale: Vec<SecretFile>,
    /// Secret files of kinds the config no longer declares.
    unwanted: Vec<PathBuf>,
    planned: Vec<Change>,
    warning: Option<String>,
    skipped: bool,
}

impl<'a> ClusterSecretsStep<'a> {
    /// `may_fall_back`: the node converged before, so its Secret files may be kept when
    /// Azure cannot be reached.
    pub fn new(
        cx: &'a Context,
        config: &'a NodeConfig,
        vault: &'a KeyVault<'a>,
        may_fall_back: bool,
    ) -> Self {
        ClusterSecretsStep {
            cx,
            config,
            vault,
            may_fall_back,
            stale: Vec::new(),
            unwanted: Vec::new(),
            planned: Vec::new(),
            warning: None,
            skipped: false,
        }
    }

    async fn fetch(&self, declared: &[DeclaredSecret<'_>]) -> Result<Vec<FetchedSecret>> {
        let jt = &self.config.join_token;
        // A token failure reads as such, not as a failed read of the first secret.
        self.vault.token().await?;
        let mut fetched = Vec::with_capacity(declared.len());
        for d in declared {
            let value = self
                .vault
                .read(d.secret)
                .await
                .with_context(|| SecretRead {
                    entry: d.kind.config_path().to_string(),
                    secret: d.secret.to_string(),
                    vault: jt.vault.clone(),
                })?;
            tracing::info!(
                entry = d.kind.config_path(),
                vault = %jt.vault,
                secret = d.secret,
                version = %value.version,
                length = value.len(),
                "cluster secret read"
            );
            fetched.push(FetchedSecret {
                kind: d.kind,
                secret: d.secret.to_string(),
                value: value.value,
                version: value.version,
            });
        }
        Ok(fetched)
    }
}

impl Step for ClusterSecretsStep<'_> {
    type Output = ();

    fn id(&self) -> StepId {
        StepId::ClusterSecrets
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        self.stale.clear();
        self.unwanted.clear();
        self.planned.clear();
        let declared = rke2::declared_cluster_secrets(self.config);
        for kind in SecretKind::ALL {
            if declared.iter().any(|d| d.kind == kind) {
                continue;
            }
            let detail = format!(
                "{} is no longer in the node config; the Secret stays in the cluster (docs/operations.md)",
                kind.config_path()
            );
            if let Some(c) = change::removal(
                StepId::ClusterSecrets,
                &self.cx.root,
                &kind.node_path(),
                &detail,
            )? {
                self.planned.push(c);
                self.unwanted.push(kind.node_path());
            }
        }
        if declared.is_empty() {
            self.skipped = self.planned.is_empty();
            return Ok(self.planned.clone());
        }
        let fetched = match self.fetch(&declared).await {
            Ok(f) => f,
            Err(e)
                if self.may_fall_back
                    && declared
                        .iter()
                        .all(|d| self.cx.root.join(d.kind.node_path()).exists()) =>
            {
                self.warning = Some(format!("keeping the existing cluster Secret files: {e:#}"));
                return Ok(self.planned.clone());
            }
            Err(e) => return Err(e),
        };
        for file in rke2::render_cluster_secrets(self.config, &fetched)? {
            if let Some(change) = file_change(
                StepId::ClusterSecrets,
                &self.cx.root,
                &file.path,
                file.expose_contents(),
                file.mode,
            )? {
                self.planned.push(change);
                self.stale.push(file);
            }
        }
        Ok(self.planned.clone())
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        for file in &self.stale {
            file.write(&self.cx.root)?;
        }
        for path in &self.unwanted {
            nodefile::remove(&self.cx.root, path)?;
        }
        Ok(self.planned.clone())
    }

    fn warning(&self) -> Option<String> {
        self.warning.clone()
    }

    fn skipped(&self) -> bool {
        self.skipped
    }

    fn output(self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Root;
    use crate::reconcile::change::Action;
    use std::fs;

    #[tokio::test]
    async fn the_file_of_an_undeclared_secret_is_removed_without_azure() {
        let dir = tempfile::tempdir().unwrap();
        // Port 9 on loopback: any attempt to reach Azure would fail the step.
        let cx = Context::new(Root::new(dir.path()), "http://127.0.0.1:9".into());
        let config = crate::config::parse(
            br#"{"version": 1, "role": "server", "node_name": "cp-01", "cluster": {},
                 "join_token": {"vault": "kv-canarie", "secret": "tok"}}"#,
        )
        .unwrap();
        let dropped = SecretKind::GrafanaAdmin.node_path();
        let operator = dropped.with_file_name("my-secret.yaml");
        for path in [&dropped, &operator] {
            let host = cx.root.join(path);
            fs::create_dir_all(host.parent().unwrap()).unwrap();
            fs::write(host, b"kind: Secret\n").unwrap();
        }
        let vault = KeyVault::new(&cx, &config.join_token, false);
        let mut step = ClusterSecretsStep::new(&cx, &config, &vault, false);
        let planned = step.plan().await.unwrap();
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert_eq!(planned[0].action, Action::Remove);
        assert_eq!(planned[0].target, dropped.display().to_string());
        assert!(planned[0].detail.contains("cluster_secrets.grafana_admin"));
        assert!(!step.skipped());
        step.apply().await.unwrap();
        assert!(!cx.root.join(&dropped).exists());
        assert!(cx.root.join(&operator).exists(), "not the step's file");
        assert!(step.plan().await.unwrap().is_empty());
        assert!(
            step.skipped(),
            "nothing declared, nothing left: skipped again"
        );
    }
}
