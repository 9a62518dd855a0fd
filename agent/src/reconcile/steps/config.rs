//! Step `config`: where the desired state comes from. IMDS userData (or `--config FILE`);
//! when IMDS is unreachable on a node that converged before, the last converged config.

use crate::config;
use crate::reconcile::change::{Action, Change};
use crate::reconcile::inputs::{self, ConfigSources, LoadedConfig};
use crate::reconcile::state::NodeState;
use crate::reconcile::step::Step;
use crate::reconcile::steps::StepId;
use crate::reconcile::Context;
use anyhow::{Context as _, Result};

pub struct ConfigStep<'a> {
    cx: &'a Context,
    state: &'a NodeState,
    loaded: Option<LoadedConfig>,
    planned: Vec<Change>,
    warning: Option<String>,
}

impl<'a> ConfigStep<'a> {
    pub fn new(cx: &'a Context, state: &'a NodeState) -> Self {
        ConfigStep {
            cx,
            state,
            loaded: None,
            planned: Vec::new(),
            warning: None,
        }
    }
}

impl Step for ConfigStep<'_> {
    /// The node config the later steps converge to, and where it came from.
    type Output = LoadedConfig;

    fn id(&self) -> StepId {
        StepId::Config
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        let may_fall_back = self.state.has_converged();
        let imds = self.cx.imds(may_fall_back)?;
        let loaded = inputs::load_config(ConfigSources {
            file: self.cx.config_file.as_deref(),
            imds: Some(&imds),
            last_converged: may_fall_back.then_some(&self.cx.root),
        })
        .await?;
        if let Some(e) = &loaded.imds_error {
            self.warning = Some(format!(
                "IMDS unreachable, using the last converged node config: {e:#}"
            ));
        }
        let digest = config::digest(&loaded.config);
        let changes = if self.state.config_digest.as_deref() == Some(digest.as_str()) {
            Vec::new()
        } else {
            vec![Change {
                step: StepId::Config,
                action: Action::Record,
                target: "node config".into(),
                detail: format!("from {}, digest {}", loaded.source, &digest[..12]),
            }]
        };
        self.loaded = Some(loaded);
        self.planned = changes.clone();
        Ok(changes)
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        // The digest is recorded once the whole node converged: a half-applied config must
        // be retried on the next run, not remembered as done.
        Ok(self.planned.clone())
    }

    fn warning(&self) -> Option<String> {
        self.warning.clone()
    }

    fn output(self) -> Result<LoadedConfig> {
        self.loaded
            .context("the config step planned without loading a config")
    }
}
