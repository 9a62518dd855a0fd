//! The reconciler: each concern is a step that observes, decides, applies and reports
//! (`step.rs`, the table of steps in `steps/`); a [`run`] runs them in order (`run.rs`).
//! `plan` runs observe+decide; `bootstrap` applies too. Knows steps, not HTTP (`inputs.rs`
//! reads the config and Key Vault through the azure clients).

pub mod azure_report;
pub mod change;
pub mod inputs;
pub mod report;
mod run;
pub mod state;
pub mod step;
pub mod steps;

pub use change::{Action, Change};
pub use report::RunReport;
pub use run::run;
pub use step::Mode;
pub use steps::{StepId, STEP_NAMES};

use crate::azure::{ImdsClient, KeyVaultClient, RetryPolicy};
use crate::paths::Root;
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a run needs from outside: where the node's files are, how to reach Azure and
/// systemd, and how long to wait.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: Root,
    pub imds_url: String,
    pub vault_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub dbus_address: Option<String>,
    /// Where to report provisioning health; `None`: no report (a sandbox without a URL).
    pub wireserver_url: Option<String>,
    pub wireserver_policy: RetryPolicy,
    /// The report before RKE2's start must not hold the start for long.
    pub progress_report_deadline: Duration,
    pub imds_policy: RetryPolicy,
    pub vault_policy: RetryPolicy,
    /// Deadlines on a node that converged before: it can fall back on its local state, so
    /// a boot without Azure need not wait the full first-boot deadlines.
    pub fallback_deadline: Duration,
    pub rke2_start_timeout: Duration,
}

impl Context {
    pub fn new(root: Root, imds_url: String) -> Context {
        Context {
            root,
            imds_url,
            vault_url: None,
            ca_file: None,
            config_file: None,
            dbus_address: None,
            wireserver_url: None,
            wireserver_policy: crate::azure::wireserver::WIRESERVER_POLICY,
            progress_report_deadline: Duration::from_secs(60),
            imds_policy: RetryPolicy::IMDS,
            vault_policy: RetryPolicy::VAULT,
            fallback_deadline: Duration::from_secs(30),
            rke2_start_timeout: Duration::from_secs(900),
        }
    }

    fn policy(&self, base: RetryPolicy, may_fall_back: bool) -> RetryPolicy {
        if may_fall_back {
            RetryPolicy {
                deadline: base.deadline.min(self.fallback_deadline),
                ..base
            }
        } else {
            base
        }
    }

    pub fn imds(&self, may_fall_back: bool) -> Result<ImdsClient> {
        ImdsClient::new(&self.imds_url, self.policy(self.imds_policy, may_fall_back))
    }

    pub fn vault(&self, may_fall_back: bool) -> Result<KeyVaultClient> {
        KeyVaultClient::new(
            self.vault_url.as_deref(),
            self.ca_file.as_deref(),
            self.policy(self.vault_policy, may_fall_back),
        )
    }
}
