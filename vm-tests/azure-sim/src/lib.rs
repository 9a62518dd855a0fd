//! azure-sim: a simulated Azure Instance Metadata Service (plain HTTP), Key Vault (HTTPS
//! with a CA generated per run) and WireServer (plain HTTP) that speak the real protocol,
//! plus scripted faults.
//! See docs/azure-sim.md. Listens on loopback only.

mod admin;
mod imds;
mod reply;
mod rules;
mod scenario;
mod server;
mod state;
mod tls;
mod vault;
mod wireserver;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use imds::KNOWN_API_VERSIONS;
pub use rules::{Endpoint, Preset, Rule};
pub use scenario::{Identities, PublicKey, RateLimit, Scenario, SecretSpec, WireServerSpec};
pub use state::{HealthRecord, RequestRecord};
pub use wireserver::PROTOCOL_VERSION as WIRESERVER_PROTOCOL_VERSION;

use rules::Service;
use state::State;

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// IMDS listener (plain HTTP); must be a loopback address. Port 0 picks a free port.
    pub imds_listen: SocketAddr,
    /// Key Vault listener (HTTPS); must be a loopback address. Port 0 picks a free port.
    pub vault_listen: SocketAddr,
    /// WireServer listener (plain HTTP); must be a loopback address. Port 0 picks a free port.
    pub wireserver_listen: SocketAddr,
    pub scenario: Scenario,
    /// Also write every request as a JSON line to this file (truncated at start).
    pub request_log: Option<PathBuf>,
    /// Extra subject alternative names for the vault certificate (IPs or DNS names).
    pub extra_sans: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        let loopback_any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        SimOptions {
            imds_listen: loopback_any_port,
            vault_listen: loopback_any_port,
            wireserver_listen: loopback_any_port,
            scenario: Scenario::default(),
            request_log: None,
            extra_sans: Vec::new(),
        }
    }
}

/// A running simulator. Dropping it stops the listeners too; `shutdown` also waits for them.
pub struct Sim {
    state: Arc<State>,
    imds_addr: SocketAddr,
    vault_addr: SocketAddr,
    wireserver_addr: SocketAddr,
    ca_pem: String,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn ensure_loopback(what: &str, addr: SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "refusing to listen on {addr} for {what}: azure-sim binds to loopback addresses only (use 127.0.0.1:PORT)"
        );
    }
    Ok(())
}

impl Sim {
    /// Binds both listeners, generates the CA and starts serving.
    pub async fn start(opts: SimOptions) -> anyhow::Result<Sim> {
        ensure_loopback("IMDS", opts.imds_listen)?;
        ensure_loopback("Key Vault", opts.vault_listen)?;
        ensure_loopback("WireServer", opts.wireserver_listen)?;
        let start = Instant::now();
        let state = Arc::new(
            State::new(opts.scenario, opts.request_log.as_deref(), start)
                .context("the scenario cannot be served")?,
        );
        let pki =
            tls::generate(&opts.extra_sans).context("cannot create the vault's TLS certificate")?;
        let imds_listener = TcpListener::bind(opts.imds_listen)
            .await
            .with_context(|| format!("cannot listen on {} for IMDS", opts.imds_listen))?;
        let vault_listener = TcpListener::bind(opts.vault_listen)
            .await
            .with_context(|| format!("cannot listen on {} for Key Vault", opts.vault_listen))?;
        let wireserver_listener = TcpListener::bind(opts.wireserver_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} for WireServer", opts.wireserver_listen)
            })?;
        let wireserver_addr = wireserver_listener
            .local_addr()
            .context("cannot read the WireServer listener's address")?;
        let imds_addr = imds_listener
            .local_addr()
            .context("cannot read the IMDS listener's address")?;
        let vault_addr = vault_listener
            .local_addr()
            .context("cannot read the Key Vault listener's address")?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config);
        let tasks = vec![
            tokio::spawn(server::accept_loop(
                imds_listener,
                None,
                state.clone(),
                Service::Imds,
                shutdown_rx.clone(),
            )),
            tokio::spawn(server::accept_loop(
                vault_listener,
                Some(acceptor),
                state.clone(),
                Service::Vault,
                shutdown_rx.clone(),
            )),
            tokio::spawn(server::accept_loop(
                wireserver_listener,
                None,
                state.clone(),
                Service::WireServer,
                shutdown_rx,
            )),
        ];
        tracing::info!(
            "azure-sim: IMDS on http://{imds_addr}, Key Vault on https://{vault_addr}, WireServer on http://{wireserver_addr}"
        );
        Ok(Sim {
            state,
            imds_addr,
            vault_addr,
            wireserver_addr,
            ca_pem: pki.ca_pem,
            shutdown_tx,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT`: use as the IMDS base URL.
    pub fn imds_url(&self) -> String {
        format!("http://{}", self.imds_addr)
    }

    /// `https://127.0.0.1:PORT`: use as the vault URL.
    pub fn vault_url(&self) -> String {
        format!("https://{}", self.vault_addr)
    }

    /// `http://127.0.0.1:PORT`: use as the WireServer base URL.
    pub fn wireserver_url(&self) -> String {
        format!("http://{}", self.wireserver_addr)
    }

    pub fn wireserver_addr(&self) -> SocketAddr {
        self.wireserver_addr
    }

    /// The goal state's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.state.incarnation()
    }

    /// Moves the goal state to a new incarnation, as Azure does when the VM model changes.
    pub fn next_incarnation(&self) -> u64 {
        self.state.next_incarnation()
    }

    /// The health reports accepted so far (answered 2xx), in order. The request log also
    /// holds the ones that parsed but were refused (stale incarnation, a rule's 5xx).
    pub fn health_reports(&self) -> Vec<HealthRecord> {
        self.state
            .requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter_map(|r| r.health)
            .collect()
    }

    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    pub fn vault_addr(&self) -> SocketAddr {
        self.vault_addr
    }

    /// PEM of this run's CA, the only certificate clients need to trust the vault.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Writes the CA PEM to `path` (atomically: temp file + rename).
    pub fn write_ca(&self, path: &Path) -> anyhow::Result<()> {
        write_atomic(path, self.ca_pem.as_bytes())
    }

    /// Every request served so far (admin requests excluded), in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests()
    }

    /// Adds a new version of a secret (creating it, enabled, if needed); it becomes current.
    pub fn set_secret(&self, name: &str, value: &str) {
        self.state.set_secret(name, value);
    }

    /// Deletes a secret with all versions; later reads get 404 SecretNotFound.
    pub fn remove_secret(&self, name: &str) -> bool {
        self.state.remove_secret(name)
    }

    /// Enables or disables a secret (a disabled one answers 403 SecretDisabled).
    pub fn set_secret_enabled(&self, name: &str, enabled: bool) -> bool {
        self.state.set_secret_enabled(name, enabled)
    }

    /// Replaces `compute.userData` (served verbatim; None serves an empty value).
    pub fn set_user_data(&self, base64: Option<String>) {
        self.state.set_user_data(base64);
    }

    /// Replaces the scripted faults; `from_s`/`until_s` and `times` restart from now.
    /// Panics on an invalid rule (a bug in the calling test); see `try_set_rules`.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        if let Err(e) = self.try_set_rules(rules) {
            panic!("azure-sim: invalid rules: {e:#}");
        }
    }

    /// Like `set_rules`, but returns invalid rules as an error.
    pub fn try_set_rules(&self, rules: Vec<Rule>) -> anyhow::Result<()> {
        self.state.try_set_rules(rules)
    }

    /// Stops accepting, ends open connections (including hung ones) and waits for the
    /// listeners to close.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Writes a file so readers never see it half-written: temp file in the same directory,
/// then rename over the target.
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}
