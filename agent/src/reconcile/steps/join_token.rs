//! Step `join-token`: the RKE2 join token from Key Vault into its 0600 drop-in. On a node
//! that converged before, an unreachable IMDS or Key Vault keeps the token file it has.

use crate::nodefile::SecretFile;
use crate::paths::RKE2_TOKEN_DROPIN;
use crate::reconcile::change::{file_change, Change};
use crate::reconcile::inputs::KeyVault;
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use crate::rke2;
use anyhow::{Context as _, Result};

/// What the step leaves for the later ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The version of the secret that was read; `None` when the token file was kept.
    pub version: Option<String>,
    /// The token file is (or, in `plan`, would be) written: RKE2 must restart.
    pub changed: bool,
}

pub struct JoinTokenStep<'a> {
    cx: &'a Context,
    vault: &'a KeyVault<'a>,
    may_fall_back: bool,
    file: Option<SecretFile>,
    /// The version of the secret that was read.
    version: Option<String>,
    planned: Vec<Change>,
    warning: Option<String>,
}

impl<'a> JoinTokenStep<'a> {
    /// `may_fall_back`: the node converged before, so its token file may be kept when
    /// Azure cannot be reached.
    pub fn new(cx: &'a Context, vault: &'a KeyVault<'a>, may_fall_back: bool) -> Self {
        JoinTokenStep {
            cx,
            vault,
            may_fall_back,
            file: None,
            version: None,
            planned: Vec::new(),
            warning: None,
        }
    }
}

impl Step for JoinTokenStep<'_> {
    type Output = JoinToken;

    fn id(&self) -> StepId {
        StepId::JoinToken
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        let secret = match self.vault.join_token().await {
            Ok(secret) => secret,
            Err(e) if self.may_fall_back && self.cx.root.join(RKE2_TOKEN_DROPIN).exists() => {
                self.warning = Some(format!("keeping the existing join token file: {e:#}"));
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let file = rke2::render_token_dropin(&secret.value);
        self.version = Some(secret.version.clone());
        self.planned = file_change(
            StepId::JoinToken,
            &self.cx.root,
            &file.path,
            file.expose_contents(),
            file.mode,
        )?
        .into_iter()
        .collect();
        self.file = Some(file);
        Ok(self.planned.clone())
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        if let Some(file) = &self.file {
            file.write(&self.cx.root)
                .context("writing the join token drop-in")?;
        }
        Ok(self.planned.clone())
    }

    fn warning(&self) -> Option<String> {
        self.warning.clone()
    }

    fn output(self) -> Result<JoinToken> {
        Ok(JoinToken {
            changed: !self.planned.is_empty(),
            version: self.version,
        })
    }
}
