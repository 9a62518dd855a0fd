//! `canarie-agent doctor`: checks that explain a broken node. Each check observes one thing,
//! read-only, within a deadline, and says what it found and what to do. Checks run
//! concurrently where they do not depend on each other; a check that needs what another
//! found (the node config, a token) is skipped with a pointer to that check when it is
//! missing. See docs/operations.md for every check.

mod clock;
mod cloud;
mod disk;
mod files;
mod host;
mod net;
mod report;
mod runs;
mod units;

pub use cloud::{NO_PROXY_VARS, PROXY_VARS};
pub use net::API_SERVER_PORT;
pub use report::{Check, NodeInfo, Report, Status, Summary, CHECK_FIELDS, FORMAT_VERSION};

use crate::azure::RetryPolicy;
use crate::reconcile::state::NodeState;
use crate::reconcile::{Context, StepId};
use anyhow::{Context as _, Result};
use secrecy::SecretString;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A check's identity: a stable id (JSON, docs) and a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub id: &'static str,
    pub title: &'static str,
    /// Works from the node config: skipped, pointing at check `config`, without one.
    pub needs_config: bool,
}

/// A check of the host or of Azure itself, which runs without a node config.
const fn spec(id: &'static str, title: &'static str) -> Spec {
    Spec {
        id,
        title,
        needs_config: false,
    }
}

/// A check of what the node config describes.
const fn node_spec(id: &'static str, title: &'static str) -> Spec {
    Spec {
        id,
        title,
        needs_config: true,
    }
}

pub const IMDS: Spec = spec("imds", "IMDS reachable");
pub const IMDS_PROXY: Spec = spec("imds-proxy", "IMDS not behind a proxy");
// A check that examines one step's work is named after the step.
pub const CONFIG: Spec = spec(StepId::Config.name(), "Node config valid");
pub const IDENTITY: Spec = node_spec("identity", "Managed-identity token");
pub const KEY_VAULT: Spec = node_spec("key-vault", "Join token readable in Key Vault");
pub const JOIN_TOKEN_FILE: Spec = node_spec("join-token-file", "Join token file");
pub const RKE2_CONFIG: Spec = node_spec(StepId::Rke2Config.name(), "RKE2 config files");
pub const RKE2_MANIFESTS: Spec = node_spec("rke2-manifests", "Seeded server manifests");
pub const DATA_DISK: Spec = node_spec(StepId::DataDisk.name(), "Data disk found and mounted");
pub const DATA_DISK_MOUNT: Spec = node_spec("data-disk-mount", "Data disk mount persistent");
pub const DATA_DISK_SPACE: Spec = node_spec("data-disk-space", "Data disk free space");
pub const SERVER_STATE_DISK: Spec = node_spec(
    StepId::ServerStateDisk.name(),
    "Server state disk found and mounted",
);
pub const SERVER_STATE_DISK_MOUNT: Spec = node_spec(
    "server-state-disk-mount",
    "Server state disk mount persistent",
);
pub const SERVER_STATE_DISK_SPACE: Spec =
    node_spec("server-state-disk-space", "Server state disk free space");
pub const RKE2_UNIT: Spec = node_spec("rke2-unit", "RKE2 service running");
pub const RKE2_JOURNAL: Spec = node_spec("rke2-journal", "RKE2 errors in the journal");
pub const SERVER_REACHABLE: Spec = node_spec("server-reachable", "Server reachable");
pub const TIME_SYNC: Spec = spec("time-sync", "Clock synchronized");
pub const RKE2_RELEASE: Spec = spec("rke2-version", "RKE2 release as built for");
pub const KERNEL: Spec = spec("kernel", "Kernel ready for Cilium");
pub const RESOURCES: Spec = spec("resources", "CPU and memory");
pub const DISK_SPACE: Spec = spec("disk-space", "Free space for RKE2");
pub const LAST_RUN: Spec = spec("last-run", "Last bootstrap run");

/// Every check, in report order.
pub const CHECKS: &[Spec] = &[
    IMDS,
    IMDS_PROXY,
    CONFIG,
    IDENTITY,
    KEY_VAULT,
    JOIN_TOKEN_FILE,
    RKE2_CONFIG,
    RKE2_MANIFESTS,
    DATA_DISK,
    DATA_DISK_MOUNT,
    DATA_DISK_SPACE,
    SERVER_STATE_DISK,
    SERVER_STATE_DISK_MOUNT,
    SERVER_STATE_DISK_SPACE,
    RKE2_UNIT,
    RKE2_JOURNAL,
    SERVER_REACHABLE,
    TIME_SYNC,
    RKE2_RELEASE,
    KERNEL,
    RESOURCES,
    DISK_SPACE,
    LAST_RUN,
];

/// One check's deadline. Network checks retry within it; a hung endpoint fails the check.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(3);
/// The whole doctor's deadline: a check still running then fails, so doctor always
/// answers within about this long, whatever hangs.
pub const TOTAL_DEADLINE: Duration = Duration::from_secs(8);

/// IMDS and Key Vault for doctor: the production retry loop with a deadline that fits a
/// check. A 410 during boot or a 429 is retried within it; a hang is cut by it.
const DOCTOR_POLICY: RetryPolicy = RetryPolicy {
    deadline: Duration::from_secs(3),
    attempt_timeout: Duration::from_secs(2),
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_millis(500),
};

/// How doctor runs: where the node is and how to reach Azure and systemd (the global
/// flags), whether it runs as root, and its deadlines.
#[derive(Debug, Clone)]
pub struct Options {
    pub cx: Context,
    /// Checks that read root-only files or probe block devices are skipped otherwise.
    pub as_root: bool,
    pub check_deadline: Duration,
    pub total_deadline: Duration,
}

impl Options {
    /// Doctor's options from the global flags' context. Fails (doctor cannot run) when the
    /// root is not a directory or an endpoint flag is not usable.
    pub fn new(mut cx: Context) -> Result<Options> {
        anyhow::ensure!(
            cx.root.dir().is_dir(),
            "--root {} is not a directory",
            cx.root.dir().display()
        );
        cx.imds_policy = DOCTOR_POLICY;
        cx.vault_policy = DOCTOR_POLICY;
        // Build the clients once here so a bad flag stops doctor before any check runs.
        cx.imds(false).context("checking --imds-url")?;
        cx.vault(false)
            .context("checking --vault-url / --ca-file")?;
        Ok(Options {
            cx,
            as_root: nix::unistd::geteuid().is_root(),
            check_deadline: CHECK_DEADLINE,
            total_deadline: TOTAL_DEADLINE,
        })
    }
}

/// What a check found, before it is timed and named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    status: Status,
    finding: String,
    hint: Option<String>,
    details: Vec<String>,
}

impl Outcome {
    fn new(status: Status, finding: impl Into<String>, hint: Option<String>) -> Self {
        Outcome {
            status,
            finding: finding.into(),
            hint,
            details: Vec::new(),
        }
    }

    pub(crate) fn ok(finding: impl Into<String>) -> Self {
        Outcome::new(Status::Ok, finding, None)
    }

    pub(crate) fn warn(finding: impl Into<String>, hint: impl Into<String>) -> Self {
        Outcome::new(Status::Warn, finding, Some(hint.into()))
    }

    pub(crate) fn fail(finding: impl Into<String>, hint: impl Into<String>) -> Self {
        Outcome::new(Status::Fail, finding, Some(hint.into()))
    }

    pub(crate) fn skipped(finding: impl Into<String>) -> Self {
        Outcome::new(Status::Skipped, finding, None)
    }

    /// The check reads root-only files or probes a device: `what` says which.
    pub(crate) fn needs_root(what: &str) -> Self {
        Outcome::skipped(format!("needs root ({what}); run doctor with sudo"))
    }

    pub(crate) fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    fn into_check(self, spec: &Spec, elapsed: Duration) -> Check {
        Check {
            id: spec.id,
            title: spec.title,
            status: self.status,
            finding: self.finding,
            hint: self.hint,
            duration_ms: elapsed.as_millis().try_into().unwrap_or(u64::MAX),
            details: self.details,
        }
    }
}

/// Deadlines: each check gets its own, never past the whole doctor's.
struct Budget {
    end: Instant,
    per_check: Duration,
}

impl Budget {
    fn limit(&self) -> Duration {
        self.per_check
            .min(self.end.saturating_duration_since(Instant::now()))
    }

    /// Runs one check within its deadline; a check that does not finish fails, and its
    /// side result (what dependent checks need) is the default.
    async fn run<T: Default>(
        &self,
        spec: &Spec,
        check: impl Future<Output = (Outcome, T)>,
    ) -> (Check, T) {
        let started = Instant::now();
        // A little beyond the per-check deadline, so the network clients' own deadline
        // (which names the cause) normally fires first.
        let limit = self.limit() + Duration::from_millis(500);
        let limit = limit.min(self.end.saturating_duration_since(started));
        let (outcome, value) = match tokio::time::timeout(limit, check).await {
            Ok(done) => done,
            Err(_) => (
                Outcome::fail(
                    format!("no result within {:.1} s", limit.as_secs_f64()),
                    "whatever this check waits for hangs; the checks it depends on, and the log (`journalctl -u canarie-agent -b`), say more",
                ),
                T::default(),
            ),
        };
        (outcome.into_check(spec, started.elapsed()), value)
    }
}

/// Instant checks (environment, files already read) need no deadline.
fn instant(spec: &Spec, outcome: Outcome) -> Check {
    outcome.into_check(spec, Duration::ZERO)
}

/// Secrets seen during the run (the join token, the access token), scrubbed from the
/// report before it is returned.
#[derive(Default)]
pub(crate) struct Secrets(Mutex<Vec<SecretString>>);

impl Secrets {
    pub(crate) fn add(&self, secret: SecretString) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(secret);
    }

    fn take(&self) -> Vec<SecretString> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Runs blocking work (file reads, device probes, subprocesses) off the async workers,
/// with the caller's log subscriber.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    tokio::task::spawn_blocking(move || tracing::dispatcher::with_default(&dispatch, work))
        .await
        .context("a doctor check panicked")
}

/// Runs every check and returns the report (secrets scrubbed). Never fails: a check that
/// cannot run says so in its finding.
pub async fn run(opts: &Options) -> Report {
    let started = Instant::now();
    let budget = Budget {
        end: started + opts.total_deadline,
        per_check: opts.check_deadline,
    };
    let secrets = Secrets::default();
    // Small, local, no secrets: read once for the checks that compare against it.
    let state = NodeState::read_any(&opts.cx.root);
    let ((mut checks, mut node), host_checks) = tokio::join!(
        node_checks(opts, &budget, state.as_ref(), &secrets),
        host_checks(opts, &budget, state.as_ref()),
    );
    checks.extend(host_checks);
    checks.sort_by_key(|c| CHECKS.iter().position(|s| s.id == c.id));
    node.as_root = opts.as_root;
    let elapsed = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    let mut report = Report::new(node, checks, elapsed);
    report.redact(&secrets.take());
    report
}

/// The chain that needs Azure or the node config: IMDS → config → (identity → Key Vault)
/// ∥ files ∥ disk ∥ units ∥ network.
async fn node_checks(
    opts: &Options,
    budget: &Budget,
    state: Option<&NodeState>,
    secrets: &Secrets,
) -> (Vec<Check>, NodeInfo) {
    let mut checks = vec![instant(
        &IMDS_PROXY,
        cloud::proxy(|k| std::env::var(k).ok()),
    )];
    let (check, imds_up) = budget.run(&IMDS, cloud::imds(opts)).await;
    checks.push(check);
    let (check, loaded) = budget
        .run(&CONFIG, cloud::config(opts, imds_up, state))
        .await;
    checks.push(check);
    let Some(loaded) = loaded else {
        let why = Outcome::skipped("no valid node config (see check config)");
        let dependent = CHECKS.iter().filter(|s| s.needs_config);
        checks.extend(dependent.map(|s| instant(s, why.clone())));
        return (checks, NodeInfo::default());
    };
    let config = &loaded.config;
    let node = NodeInfo {
        // RKE2 names the node after the host when the config does not.
        name: config.node_name.clone().or_else(sysinfo::System::host_name),
        role: Some(config.role.to_string()),
        config_source: Some(loaded.source.id().to_string()),
        as_root: opts.as_root,
    };

    let azure = async {
        let (identity, token) = if imds_up {
            budget
                .run(
                    &IDENTITY,
                    cloud::identity(opts, &config.join_token, secrets),
                )
                .await
        } else {
            let why = Outcome::skipped("IMDS is unreachable (see check imds)");
            (instant(&IDENTITY, why), None)
        };
        let vault = match token {
            Some(token) => {
                budget
                    .run(
                        &KEY_VAULT,
                        cloud::key_vault(opts, &config.join_token, &token, state, secrets),
                    )
                    .await
                    .0
            }
            None => instant(
                &KEY_VAULT,
                Outcome::skipped("no managed-identity token (see check identity)"),
            ),
        };
        vec![identity, vault]
    };
    let (azure, files, disk, state_disk, unit, journal, server) = tokio::join!(
        azure,
        files::checks(opts, budget, config),
        disk::checks(opts, budget, config, &disk::DATA),
        disk::checks(opts, budget, config, &disk::SERVER_STATE),
        budget.run(&RKE2_UNIT, units::rke2_unit(opts, config)),
        budget.run(&RKE2_JOURNAL, units::rke2_journal(opts, config)),
        budget.run(&SERVER_REACHABLE, net::server_reachable(config)),
    );
    checks.extend(azure);
    checks.extend(files);
    checks.extend(disk);
    checks.extend(state_disk);
    checks.extend([unit.0, journal.0, server.0]);
    (checks, node)
}

/// Facts about the host that need no config: clock, RKE2 release, kernel, resources, last
/// run.
async fn host_checks(opts: &Options, budget: &Budget, state: Option<&NodeState>) -> Vec<Check> {
    let (time, rke2, kernel, resources, space) = tokio::join!(
        budget.run(&TIME_SYNC, clock::time_sync(opts)),
        budget.run(&RKE2_RELEASE, host::rke2_version(opts)),
        budget.run(&KERNEL, host::kernel(opts)),
        budget.run(&RESOURCES, host::resources()),
        budget.run(&DISK_SPACE, host::disk_space(opts)),
    );
    let last_run = instant(&LAST_RUN, runs::last_run(opts, state));
    vec![time.0, rke2.0, kernel.0, resources.0, space.0, last_run]
}
