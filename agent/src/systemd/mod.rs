//! The few systemd D-Bus calls the agent needs (zbus): reload unit files, read a unit's
//! state, start, restart or reload a unit and wait for the job's result with a deadline,
//! reset a failed unit (sshd, after provisioning made its host keys). Starting,
//! restarting and reloading are privileged: systemd grants them to a root caller only
//! with CAP_SYS_ADMIN in its effective set (docs/packaging.md, the unit's capabilities).
//!
//! A few hand-declared methods instead of a full typed binding such as `zbus_systemd`:
//! the agent uses a handful of calls, and the fake Manager in the tests implements those
//! the tests reach.
//! The node's hostname goes through systemd-hostnamed ([`hostname`]).

use anyhow::{Context, Result};
use futures_util::StreamExt;
use std::time::Duration;
use zbus::zvariant::OwnedObjectPath;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

/// A unit's state as `systemctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// systemd has not read the unit's changed files or drop-ins yet (`daemon-reload`).
    pub need_daemon_reload: bool,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}), {}",
            self.active_state, self.sub_state, self.load_state
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum JobKind {
    Start,
    Restart,
    Reload,
}

impl JobKind {
    fn verb(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Restart => "restart",
            JobKind::Reload => "reload",
        }
    }
}

pub mod hostname;

/// The system bus, or the bus at `address` (tests: a private bus).
pub(crate) async fn connect_bus(address: Option<&str>) -> Result<zbus::Connection> {
    Ok(match address {
        Some(addr) => zbus::connection::Builder::address(addr)
            .with_context(|| format!("D-Bus address {addr:?} is not valid"))?
            .build()
            .await
            .with_context(|| format!("connecting to the D-Bus at {addr}"))?,
        None => zbus::Connection::system()
            .await
            .context("connecting to the system D-Bus")?,
    })
}

pub struct Systemd {
    conn: zbus::Connection,
    manager: ManagerProxy<'static>,
}

impl Systemd {
    /// Connects to systemd on the system bus, or on `address` (tests: a private bus).
    pub async fn connect(address: Option<&str>) -> Result<Self> {
        let conn = connect_bus(address).await?;
        let manager = ManagerProxy::new(&conn)
            .await
            .context("creating the systemd Manager proxy")?;
        Ok(Systemd { conn, manager })
    }

    /// `systemctl daemon-reload`: makes systemd read unit files and drop-ins the agent wrote.
    pub async fn reload(&self) -> Result<()> {
        self.manager
            .reload()
            .await
            .context("asking systemd to reload its unit files")
    }

    async fn unit(&self, unit: &str) -> Result<UnitProxy<'_>> {
        let path = self
            .manager
            .load_unit(unit)
            .await
            .with_context(|| format!("looking up unit {unit}"))?;
        UnitProxy::builder(&self.conn)
            .path(path)
            .context("building the unit proxy")?
            .build()
            .await
            .context("creating the unit proxy")
    }

    pub async fn unit_state(&self, unit: &str) -> Result<UnitState> {
        let proxy = self.unit(unit).await?;
        Ok(UnitState {
            load_state: proxy
                .load_state()
                .await
                .with_context(|| format!("reading LoadState of {unit}"))?,
            active_state: proxy
                .active_state()
                .await
                .with_context(|| format!("reading ActiveState of {unit}"))?,
            sub_state: proxy
                .sub_state()
                .await
                .with_context(|| format!("reading SubState of {unit}"))?,
            need_daemon_reload: proxy
                .need_daemon_reload()
                .await
                .with_context(|| format!("reading NeedDaemonReload of {unit}"))?,
        })
    }

    /// Starts `unit` and waits for its start job: `done` is success; `failed`, `timeout`,
    /// `dependency`, `canceled` or no result within `timeout` is an error that carries the
    /// unit's state and where to look next.
    pub async fn start_and_wait(&self, unit: &str, timeout: Duration) -> Result<()> {
        self.job_and_wait(JobKind::Start, unit, timeout).await
    }

    /// Starts a unit whose file the agent has just written, and waits for the job like
    /// [`Self::start_and_wait`]. systemd reads a unit file it has never loaded on first
    /// use; one it holds an older copy of (`NeedDaemonReload`) or found missing earlier is
    /// re-read with a reload first.
    pub async fn start_written_unit(&self, unit: &str, timeout: Duration) -> Result<()> {
        let state = self.unit_state(unit).await?;
        if state.load_state != "loaded" || state.need_daemon_reload {
            self.reload().await?;
        }
        self.start_and_wait(unit, timeout).await
    }

    /// Restarts `unit` (it re-reads its config) and waits for the job like [`Self::start_and_wait`].
    pub async fn restart_and_wait(&self, unit: &str, timeout: Duration) -> Result<()> {
        self.job_and_wait(JobKind::Restart, unit, timeout).await
    }

    /// Reloads `unit` (`ExecReload=`) and waits for the job like [`Self::start_and_wait`].
    pub async fn reload_and_wait(&self, unit: &str, timeout: Duration) -> Result<()> {
        self.job_and_wait(JobKind::Reload, unit, timeout).await
    }

    /// `systemctl reset-failed UNIT`: forgets its failures and its start-limit count.
    pub async fn reset_failed(&self, unit: &str) -> Result<()> {
        self.manager
            .reset_failed_unit(unit)
            .await
            .with_context(|| format!("asking systemd to reset the failed state of {unit}"))
    }

    /// `systemctl is-enabled UNIT` (`enabled`, `disabled`, `static`, `masked`, ...).
    pub async fn unit_file_state(&self, unit: &str) -> Result<String> {
        self.unit(unit)
            .await?
            .unit_file_state()
            .await
            .with_context(|| format!("reading UnitFileState of {unit}"))
    }

    async fn job_and_wait(&self, kind: JobKind, unit: &str, timeout: Duration) -> Result<()> {
        let verb = kind.verb();
        // Subscribe before starting, so the job's end cannot slip past unseen.
        self.manager
            .subscribe()
            .await
            .context("subscribing to systemd job signals")?;
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .context("listening for systemd JobRemoved signals")?;
        let job = match kind {
            JobKind::Start => self.manager.start_unit(unit, "replace").await,
            JobKind::Restart => self.manager.restart_unit(unit, "replace").await,
            JobKind::Reload => self.manager.reload_unit(unit, "replace").await,
        }
        .with_context(|| format!("asking systemd to {verb} {unit}"))?;
        tracing::info!(unit, job = %job.as_str(), "{verb} job queued");
        let wait = async {
            while let Some(signal) = removed.next().await {
                let args = signal.args().context("decoding a JobRemoved signal")?;
                if args.job == job {
                    return Ok::<_, anyhow::Error>(args.result);
                }
            }
            anyhow::bail!("the D-Bus connection closed before the {verb} job of {unit} finished")
        };
        let result = match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r?,
            Err(_) => {
                let state = self.describe(unit).await;
                anyhow::bail!(
                    "the {verb} job of {unit} did not finish within {:.1}s ({state}); see `journalctl -u {unit}`",
                    timeout.as_secs_f64()
                );
            }
        };
        if result == "done" {
            return Ok(());
        }
        let state = self.describe(unit).await;
        anyhow::bail!(
            "the {verb} job of {unit} ended with result {result:?} ({state}); see `journalctl -u {unit}`"
        )
    }

    async fn describe(&self, unit: &str) -> String {
        match self.unit_state(unit).await {
            Ok(s) => format!("unit is {s}"),
            Err(e) => format!("unit state unknown: {e:#}"),
        }
    }
}
