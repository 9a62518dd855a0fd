//! `azure-sim`: runs the simulator as a process for scripts and VM tests (see
//! docs/azure-sim.md). The library does the work; this only parses flags, writes the CA and
//! ready file, and waits for SIGTERM/SIGINT.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use azure_sim::{write_atomic, Scenario, Sim, SimOptions};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// Simulated Azure IMDS (HTTP), Key Vault (HTTPS) and WireServer (HTTP) on loopback, for tests.
#[derive(Parser, Debug)]
#[command(name = "azure-sim", version)]
struct Args {
    /// Scenario JSON file (VM metadata, identities, user data, secrets, fault rules).
    /// Without it the default scenario is served (system identity, no secrets).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// IMDS listen address (loopback only); port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    imds_listen: SocketAddr,
    /// Key Vault listen address (loopback only); port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    vault_listen: SocketAddr,
    /// WireServer listen address (loopback only); port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    wireserver_listen: SocketAddr,
    /// Where to write the PEM of this run's CA (trust it to reach the vault).
    #[arg(long, value_name = "PATH")]
    ca_out: PathBuf,
    /// Append every request as a JSON line here (truncated at start; never holds tokens or secret values).
    #[arg(long, value_name = "FILE")]
    request_log: Option<PathBuf>,
    /// Written atomically once all listeners are up:
    /// {"imds_url","vault_url","wireserver_url","ca_file","pid"}.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Extra subject alternative name for the vault certificate (repeatable).
    #[arg(long = "extra-san", value_name = "NAME")]
    extra_sans: Vec<String>,
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(path))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    let ca_file = absolute(&args.ca_out)?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let sim = Sim::start(SimOptions {
        imds_listen: args.imds_listen,
        vault_listen: args.vault_listen,
        wireserver_listen: args.wireserver_listen,
        scenario,
        request_log: args.request_log.clone(),
        extra_sans: args.extra_sans.clone(),
    })
    .await?;
    sim.write_ca(&ca_file)
        .context("cannot write the CA certificate (--ca-out)")?;
    if let Some(ready) = &args.ready_file {
        let info = serde_json::json!({
            "imds_url": sim.imds_url(),
            "vault_url": sim.vault_url(),
            "wireserver_url": sim.wireserver_url(),
            "ca_file": ca_file,
            "pid": std::process::id(),
        });
        write_atomic(ready, format!("{info}\n").as_bytes())
            .context("cannot write the ready file (--ready-file)")?;
    }
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    sim.shutdown().await;
    if let Some(ready) = &args.ready_file {
        // A stale ready file would point the next waiter at a dead simulator.
        let _ = std::fs::remove_file(ready);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("azure-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
