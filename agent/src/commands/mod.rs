//! One file per command: load inputs, call the library, print, choose the exit code.
//! The only layer that prints to stdout.

mod config;
mod disk;
mod doctor;
mod kubeconfig;
mod logging;
mod reconcile;
mod render;

use crate::cli::{Cli, Command, DiskCommand, GlobalArgs};
use crate::paths::Root;
use crate::reconcile::{Context, Mode};
use std::time::Duration;

pub fn run(cli: Cli) -> i32 {
    logging::init();
    let global = &cli.global;
    match cli.command {
        Command::Config(cmd) => config::run(global, cmd),
        Command::Disk(DiskCommand::Inspect(args)) => disk::inspect(global, &args),
        Command::Render { out } => render::run(global, &out),
        Command::Kubeconfig(args) => kubeconfig::run(&args),
        Command::Plan { json } => reconcile::run(global, Mode::Plan, json),
        Command::Bootstrap { json } => reconcile::run(global, Mode::Apply, json),
        Command::Doctor { json } => doctor::run(global, json),
    }
}

/// Parses and validates a node config read from `source`. `config validate` and `render`
/// both call this, so whatever one refuses the other refuses with the same line (and
/// exit code 1, "invalid config").
pub(crate) fn parse_config(
    bytes: &[u8],
    source: &crate::config::ConfigSource,
) -> Result<crate::config::NodeConfig, i32> {
    crate::config::parse(bytes).map_err(|e| {
        eprintln!("canarie-agent: invalid node config from {source}: {e}");
        crate::cli::exit::FAILED
    })
}

/// The sandbox root of the global flags.
fn root(global: &GlobalArgs) -> Root {
    Root::new(global.root.clone())
}

/// The reconciler's context: endpoints, sandbox root and deadlines from the global flags.
fn context(global: &GlobalArgs) -> Context {
    let mut cx = Context::new(root(global), global.imds_url.clone());
    cx.vault_url = global.vault_url.clone();
    cx.ca_file = global.ca_file.clone();
    cx.config_file = global.config.clone();
    cx.dbus_address = global.dbus_address.clone();
    cx.wireserver_url = global.wireserver_url.clone().or_else(|| {
        cx.root
            .is_host()
            .then(|| crate::azure::WIRESERVER_DEFAULT_URL.to_string())
    });
    cx.imds_policy.deadline = Duration::from_secs(global.imds_deadline);
    cx.vault_policy.deadline = Duration::from_secs(global.vault_deadline);
    cx.fallback_deadline = Duration::from_secs(global.fallback_deadline);
    cx.rke2_start_timeout = Duration::from_secs(global.rke2_start_timeout);
    cx
}

/// Prints the one-line error of a failed command: the whole context chain as a sentence.
pub(crate) fn report_error(what: &str, err: &anyhow::Error) {
    eprintln!("canarie-agent: {what}: {err:#}");
}

/// The async runtime of the commands that talk to Azure and D-Bus: two workers are plenty
/// for a handful of concurrent requests, and keep the agent small on a busy boot.
pub(crate) fn runtime(what: &str) -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("canarie-agent: {what} cannot start the async runtime: {e}");
            crate::cli::exit::ERROR
        })
}
