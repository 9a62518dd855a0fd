//! The command-line interface as clap defines it (also the source of the man page and the
//! completions, `packaging/gen`), and the exit codes every command shares. Nothing here runs
//! a command: `commands` does, and `main` ties the two together.

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
    /// WireServer base URL for provisioning reports (default: http://168.63.129.16 when
    /// --root is /; a --root sandbox reports only to an explicit URL).
    #[arg(long, global = true, env = "CANARIE_WIRESERVER_URL")]
    pub wireserver_url: Option<String>,
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
    Kubeconfig(KubeconfigArgs),
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

#[derive(Debug, Clone, Args)]
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

/// Parses the process arguments. A usage error, `--help` or `--version` is printed here
/// and comes back as the exit code to end with.
pub fn parse() -> Result<Cli, i32> {
    Cli::try_parse().map_err(|e| {
        let code = if e.use_stderr() {
            exit::ERROR
        } else {
            exit::OK
        };
        let _ = e.print();
        code
    })
}
