//! Step `config`: where the desired state comes from. IMDS userData (or `--config FILE`);
//! when IMDS is unreachable on a node that converged before, the last converged config.

use crate::config::{self, ConfigSource, NodeConfig};
use crate::reconcile::change::{Action, Change};
use crate::reconcile::inputs;
use crate::reconcile::state::{self, NodeState};
use crate::reconcile::step::Step;
use crate::reconcile::Context;
use anyhow::{Context as _, Result};

pub struct ConfigStep<'a> {
    cx: &'a Context,
    state: &'a NodeState,
    pub loaded: Option<(NodeConfig, ConfigSource)>,
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
    fn name(&self) -> &'static str {
        "config"
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        let imds = self.cx.imds(self.state.has_converged())?;
        let loaded = match inputs::load_config(self.cx.config_file.as_deref(), &imds).await {
            Ok(loaded) => loaded,
            // A bad config is never papered over with an old one: the operator must see it.
            Err(e)
                if self.cx.config_file.is_none()
                    && self.state.has_converged()
                    && e.downcast_ref::<inputs::InvalidConfig>().is_none() =>
            {
                let fallback = state::load_last_config(&self.cx.root).with_context(|| {
                    format!(
                        "IMDS is unreachable ({e:#}) and the last converged config cannot be read"
                    )
                })?;
                self.warning = Some(format!(
                    "IMDS unreachable, using the last converged node config: {e:#}"
                ));
                fallback
            }
            Err(e) => return Err(e),
        };
        let digest = config::digest(&loaded.0);
        let changes = if self.state.config_digest.as_deref() == Some(digest.as_str()) {
            Vec::new()
        } else {
            vec![Change {
                step: "config",
                action: Action::Record,
                target: "node config".into(),
                detail: format!("from {}, digest {}", loaded.1, &digest[..12]),
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
}
