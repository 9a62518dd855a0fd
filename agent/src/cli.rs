//! The command-line interface: argument parsing and dispatch. Each command's logic lives
//! in its module; this file only turns results into output and exit codes.

use crate::paths::Root;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes shared by every command (the README documents them).
pub mod exit {
    /// Converged / all checks ok / accepted.
    pub const OK: i32 = 0;
    /// A refusal or failed check: the node or input is not as it should be.
    pub const FAILED: i32 = 1;
    /// The command itself could not run (bad usage, unreadable input, not root).
    pub const ERROR: i32 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "canarie-agent",
    version,
    about = "Converges an RKE2 node on Azure to its node config",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Endpoint and sandbox overrides (tests, the simulator); defaults are the real node's.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// IMDS base URL.
    #[arg(long, global = true, env = "CANARIE_IMDS_URL", default_value = crate::azure::IMDS_DEFAULT_URL)]
    pub imds_url: String,
    /// Key Vault base URL; replaces https://{vault}.vault.azure.net.
    #[arg(long, global = true, env = "CANARIE_VAULT_URL")]
    pub vault_url: Option<String>,
    /// An extra PEM CA bundle trusted for Key Vault, beside the system roots.
    #[arg(long, global = true, env = "CANARIE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Resolve every host path under this directory (a sandbox).
    #[arg(long, global = true, env = "CANARIE_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// Read the node config from this file instead of IMDS userData.
    #[arg(long, global = true, env = "CANARIE_CONFIG")]
    pub config: Option<PathBuf>,
    /// D-Bus address of systemd (default: the system bus).
    #[arg(long, global = true, env = "CANARIE_DBUS_ADDRESS")]
    pub dbus_address: Option<String>,
    /// Total seconds to keep retrying IMDS (410 during boot lasts up to 70 s).
    #[arg(
        long,
        global = true,
        env = "CANARIE_IMDS_DEADLINE",
        default_value_t = 180,
        value_name = "SECS"
    )]
    pub imds_deadline: u64,
    /// Total seconds to keep retrying Key Vault (covers the RBAC propagation window).
    #[arg(
        long,
        global = true,
        env = "CANARIE_VAULT_DEADLINE",
        default_value_t = 660,
        value_name = "SECS"
    )]
    pub vault_deadline: u64,
    /// On a node that converged before, give up on Azure after this many seconds and
    /// start RKE2 from the local state.
    #[arg(
        long,
        global = true,
        env = "CANARIE_FALLBACK_DEADLINE",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub fallback_deadline: u64,
    /// Seconds to wait for RKE2's start job (a server's first start takes minutes).
    #[arg(
        long,
        global = true,
        env = "CANARIE_RKE2_START_TIMEOUT",
        default_value_t = 900,
        value_name = "SECS"
    )]
    pub rke2_start_timeout: u64,
}

impl GlobalArgs {
    pub fn root(&self) -> Root {
        Root::new(self.root.clone())
    }

    /// The reconciler's context: endpoints, sandbox root and deadlines from these flags.
    pub fn context(&self) -> crate::reconcile::Context {
        use std::time::Duration;
        let mut cx = crate::reconcile::Context::new(self.root(), self.imds_url.clone());
        cx.vault_url = self.vault_url.clone();
        cx.ca_file = self.ca_file.clone();
        cx.config_file = self.config.clone();
        cx.dbus_address = self.dbus_address.clone();
        cx.imds_policy.deadline = Duration::from_secs(self.imds_deadline);
        cx.vault_policy.deadline = Duration::from_secs(self.vault_deadline);
        cx.fallback_deadline = Duration::from_secs(self.fallback_deadline);
        cx.rke2_start_timeout = Duration::from_secs(self.rke2_start_timeout);
        cx
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge the node (the systemd unit's ExecStart).
    Bootstrap {
        /// Print the run's report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what bootstrap would change; writes nothing.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Explain the node's state: what is wrong and what to do.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Node config tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Data disk tools.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Write every file the node would get under DIR (the token replaced by a placeholder).
    ///
    /// Reads the node config from --config FILE (required here). The data disk counts as
    /// mounted when the config has a data_disk, so the Longhorn default-disk label is
    /// rendered exactly then. Files go to DIR/<node path>, e.g. DIR/etc/rancher/rke2/config.yaml.
    Render {
        /// Directory to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Fetch the cluster-admin kubeconfig from the server over SSH, for an operator's machine.
    ///
    /// Runs `ssh -p PORT -- DESTINATION sudo -n cat /etc/rancher/rke2/rke2.yaml`, points its
    /// server: at the load balancer (the host of DESTINATION, or --api-server) and writes it
    /// to FILE with mode 0600. The credentials are never printed.
    Kubeconfig(crate::commands::kubeconfig::KubeconfigArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a node config; FILE may be `-` for standard input.
    Validate { file: PathBuf },
    /// Print the node config's JSON Schema.
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Read-only: what the agent would do with DEVICE (format, reuse, refuse, mounted).
    Inspect(DiskInspectArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DiskInspectArgs {
    pub device: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// The label the agent formats with and reuses.
    #[arg(long, default_value = "longhorn")]
    pub label: String,
    #[arg(long, default_value_t = 1)]
    pub min_size_gib: u64,
    /// The mount point the disk belongs at.
    #[arg(long, default_value = "/var/lib/longhorn")]
    pub mount_point: PathBuf,
}

/// Parses the process arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    crate::commands::run(cli)
}
