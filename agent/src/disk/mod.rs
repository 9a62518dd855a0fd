//! The node's persistent disks (the Longhorn data disk, a server's state disk): find each by
//! LUN, probe it with libblkid, format only a blank disk, reuse our own, refuse everything
//! else, mount it for good. One code path for every [`Purpose`]; see docs/disk-safety.md.
//!
//! The reconciler calls it as one step, from a blocking context:
//! [`observe`] (read-only: find, probe, decide) then [`apply`] (act on the decision,
//! re-checked immediately before acting). `disk inspect` uses [`inspect`].

mod apply;
mod blkid;
mod decide;
mod discover;
mod marker;
mod probe;
mod sysfs;
mod unit;

pub use blkid::{SafeProbe, SafeValues, Signature};
pub use discover::lun_links;
pub use marker::{FormatMarker, FORMAT_MARKER, STATE_FORMAT_MARKER};
pub use unit::{escape_path, unit_name, Persisted, SYSTEMD_UNIT_DIR};

use crate::config::{DataDiskConfig, NodeConfig, ServerStateDiskConfig};
use crate::paths::{Root, RKE2_SERVER_DIR};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a disk is for. Everything that differs between the disks is in this table; the
/// finding, probing, deciding, formatting and mounting are the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Longhorn's replicas (`data_disk`).
    LonghornData,
    /// RKE2's server state: etcd, its snapshots, certificates, token (`server_state_disk`).
    ServerState,
}

impl Purpose {
    pub const ALL: [Purpose; 2] = [Purpose::LonghornData, Purpose::ServerState];

    /// The node config key, as error messages and hints name it.
    pub const fn key(self) -> &'static str {
        match self {
            Purpose::LonghornData => "data_disk",
            Purpose::ServerState => "server_state_disk",
        }
    }

    /// The disk's name in messages.
    pub const fn what(self) -> &'static str {
        match self {
            Purpose::LonghornData => "data disk",
            Purpose::ServerState => "server state disk",
        }
    }

    /// The mount unit's description.
    pub const fn description(self) -> &'static str {
        match self {
            Purpose::LonghornData => "Longhorn data disk",
            Purpose::ServerState => "RKE2 server state disk",
        }
    }

    /// Its format-in-progress marker (docs/disk-safety.md).
    pub const fn format_marker(self) -> &'static str {
        match self {
            Purpose::LonghornData => FORMAT_MARKER,
            Purpose::ServerState => STATE_FORMAT_MARKER,
        }
    }

    /// The purpose whose mount point this is (`disk inspect`'s `--mount-point`).
    pub fn of_mount_point(mount_point: &Path) -> Purpose {
        if mount_point == Path::new(RKE2_SERVER_DIR) {
            Purpose::ServerState
        } else {
            Purpose::LonghornData
        }
    }
}

/// One configured disk, whatever its purpose: what the disk code needs of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub purpose: Purpose,
    pub lun: u8,
    pub device: Option<PathBuf>,
    /// A node path: `data_disk.mount_point`, or RKE2's server directory for the state disk.
    pub mount_point: PathBuf,
    pub label: String,
    pub min_size_gib: u64,
    pub wait_seconds: u64,
}

impl DiskSpec {
    /// The node's disks, in the order they are handled.
    pub fn all(config: &NodeConfig) -> Vec<DiskSpec> {
        let data = config.data_disk.as_ref().map(DiskSpec::from);
        let state = config.server_state_disk.as_ref().map(DiskSpec::from);
        data.into_iter().chain(state).collect()
    }

    /// The node's disk of `purpose`, if it has one.
    pub fn of(config: &NodeConfig, purpose: Purpose) -> Option<DiskSpec> {
        DiskSpec::all(config)
            .into_iter()
            .find(|d| d.purpose == purpose)
    }
}

impl From<&DataDiskConfig> for DiskSpec {
    fn from(c: &DataDiskConfig) -> Self {
        DiskSpec {
            purpose: Purpose::LonghornData,
            lun: c.lun,
            device: c.device.clone(),
            mount_point: c.mount_point.clone(),
            label: c.label.clone(),
            min_size_gib: c.min_size_gib,
            wait_seconds: c.wait_seconds,
        }
    }
}

impl From<&ServerStateDiskConfig> for DiskSpec {
    fn from(c: &ServerStateDiskConfig) -> Self {
        DiskSpec {
            purpose: Purpose::ServerState,
            lun: c.lun,
            device: c.device.clone(),
            mount_point: PathBuf::from(RKE2_SERVER_DIR),
            label: c.label.clone(),
            min_size_gib: c.min_size_gib,
            wait_seconds: c.wait_seconds,
        }
    }
}

impl From<&DiskSpec> for DiskSpec {
    fn from(d: &DiskSpec) -> Self {
        d.clone()
    }
}

/// What the disk is expected to be: the part of the config the decision uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectOptions {
    pub purpose: Purpose,
    /// The ext4 label the agent formats with and recognises as its own.
    pub label: String,
    /// Smaller disks are refused.
    pub min_size_gib: u64,
    /// Where the disk belongs (a node path; resolved under the root).
    pub mount_point: PathBuf,
}

impl From<&DiskSpec> for InspectOptions {
    fn from(cfg: &DiskSpec) -> Self {
        InspectOptions {
            purpose: cfg.purpose,
            label: cfg.label.clone(),
            min_size_gib: cfg.min_size_gib,
            mount_point: cfg.mount_point.clone(),
        }
    }
}

/// The four outcomes of the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// Blank: format ext4 with our label, then mount.
    Format,
    /// Our own ext4 from an earlier run: e2fsck -p, then mount.
    Reuse,
    /// Anything else: leave the disk exactly as it is.
    Refuse,
    /// Our ext4, already mounted at the target: nothing to do but keep it persistent.
    Mounted,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Format => "format",
            DecisionKind::Reuse => "reuse",
            DecisionKind::Refuse => "refuse",
            DecisionKind::Mounted => "mounted",
        }
    }
}

impl std::fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision and why; a refusal's reason says what was found and what a person can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: DecisionKind,
    pub reason: String,
}

/// Every fact about the device the decision was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub size_bytes: u64,
    /// `DEVTYPE=disk` (not a partition).
    pub whole_disk: bool,
    /// The device (or one of its partitions) holds the host's `/`.
    pub holds_root: bool,
    /// Why the device is busy: mounts (of it or a partition), holders, swap, EBUSY.
    pub in_use: Vec<String>,
    /// The device itself is mounted at the target mount point.
    pub mounted_at_target: bool,
    /// Another filesystem is mounted at the target mount point (`TYPE SOURCE`).
    pub target_taken_by: Option<String>,
    /// Probe 1: libblkid's safe probe.
    pub safe: SafeProbe,
    /// Probe 2: every signature, as `wipefs --no-act` lists them.
    pub signatures: Vec<Signature>,
    /// Non-zero bytes in the first MiB.
    pub nonzero_head: bool,
    /// Non-zero bytes in the last MiB.
    pub nonzero_tail: bool,
    /// The size an ext4 superblock claims, when there is one.
    pub ext4_bytes: Option<u64>,
    /// A format marker left by an interrupted run of this agent names this disk.
    pub interrupted_format: bool,
}

impl ProbeReport {
    /// The filesystem UUID the safe probe read.
    pub fn uuid(&self) -> Option<&str> {
        match &self.safe {
            SafeProbe::Found(v) => v.uuid.as_deref(),
            _ => None,
        }
    }
}

/// The data disk as found and judged; nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskObservation {
    /// The path that led to the disk: a LUN link, `data_disk.device` or the CLI argument.
    pub via: PathBuf,
    /// The resolved device node, e.g. `/dev/sdc`.
    pub device: PathBuf,
    pub report: ProbeReport,
    pub decision: Decision,
}

impl DiskObservation {
    pub fn signatures(&self) -> &[Signature] {
        &self.report.signatures
    }
}

/// Who mounts the data disk once it is formatted or checked.
pub enum Mounter<'a> {
    /// mount(2) from the agent's own process. For a `--root` sandbox only: its mount point
    /// lies under the sandbox, which no systemd mount unit (`Where=` is a node path) names.
    Syscall,
    /// systemd starts the persisted mount unit, given its name. The mount is then made in
    /// the host's mount namespace: the packaged unit runs the agent in a namespace of its
    /// own (ProtectSystem= and friends, docs/packaging.md), where a mount(2) would stay
    /// invisible to RKE2 and Longhorn.
    Systemd(&'a (dyn Fn(&str) -> Result<()> + Sync)),
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskAction {
    Formatted,
    Reused,
    AlreadyMounted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOutcome {
    pub device: PathBuf,
    /// The filesystem UUID the mount unit names.
    pub uuid: String,
    pub action: DiskAction,
    /// The disk was mounted by this run.
    pub mounted_now: bool,
    /// The mount unit and its wants link; when changed, systemd needs a daemon-reload
    /// to see them before the next boot.
    pub persisted: Persisted,
}

impl DiskOutcome {
    /// False for a converged node: nothing was formatted, mounted or written.
    pub fn changed(&self) -> bool {
        self.action != DiskAction::AlreadyMounted || self.mounted_now || self.persisted.changed()
    }
}

/// A refusal: the disk was left exactly as it was. Returned (inside `anyhow::Error`)
/// by [`apply`]; callers may downcast to tell it from an operational error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing {}: {reason}", device.display())]
pub struct Refused {
    pub device: PathBuf,
    pub reason: String,
}

/// Finds the configured disk (waiting up to `data_disk.wait_seconds` for its link),
/// probes it and decides. Read-only.
pub fn observe<'a>(cfg: impl Into<DiskSpec> + 'a, root: &Root) -> Result<DiskObservation> {
    let cfg: DiskSpec = cfg.into();
    let wait = Duration::from_secs(cfg.wait_seconds);
    observe_within(&cfg, root, wait)
}

/// [`observe`] with an explicit wait (`plan` may not want to wait for a late link).
pub fn observe_within(cfg: &DiskSpec, root: &Root, wait: Duration) -> Result<DiskObservation> {
    let found = discover::find(cfg, root, wait)?;
    let obs = examine(&found.via, &found.device, &InspectOptions::from(cfg), root)?;
    tracing::info!(
        step = "disk",
        disk = cfg.purpose.key(),
        device = %obs.device.display(),
        via = %obs.via.display(),
        decision = obs.decision.kind.as_str(),
        "{}",
        obs.decision.reason
    );
    Ok(obs)
}

/// What the agent would do with `device` (`disk inspect`). Read-only.
pub fn inspect(device: &Path, opts: &InspectOptions, root: &Root) -> Result<DiskObservation> {
    let resolved = match std::fs::canonicalize(device) {
        Ok(path) => path,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no such device {}", device.display())
        }
        Err(e) => return Err(e).with_context(|| format!("resolving {}", device.display())),
    };
    examine(device, &resolved, opts, root)
}

fn examine(
    via: &Path,
    device: &Path,
    opts: &InspectOptions,
    root: &Root,
) -> Result<DiskObservation> {
    let report = probe::examine(device, opts, root)?;
    let decision = decide::decide(device, &report, opts);
    Ok(DiskObservation {
        via: via.to_path_buf(),
        device: device.to_path_buf(),
        report,
        decision,
    })
}

/// Acts on an observation: format a blank disk, check our own, persist the mount, mount
/// it at the target with `mounter` and confirm from mountinfo that it is mounted. The
/// decision is re-made from a fresh probe immediately before acting, and nothing is done
/// unless it still agrees, so a stale observation (or a `plan` shown long ago) can never
/// format a disk that has changed since.
///
/// A refusal comes back as an error wrapping [`Refused`]; the disk is untouched.
/// Crash safety: a run killed after mkfs re-probes as our ext4 and is reused, never
/// formatted again; one killed inside mkfs is finished thanks to the [`FormatMarker`]
/// (see docs/disk-safety.md).
pub fn apply(
    obs: &DiskObservation,
    cfg: impl Into<DiskSpec>,
    root: &Root,
    mounter: &Mounter<'_>,
) -> Result<DiskOutcome> {
    let cfg: DiskSpec = cfg.into();
    let opts = InspectOptions::from(&cfg);
    let (purpose, what) = (cfg.purpose, cfg.purpose.what());
    let refused = |reason: String| {
        anyhow::Error::new(Refused {
            device: obs.device.clone(),
            reason,
        })
    };
    if obs.decision.kind == DecisionKind::Refuse {
        return Err(refused(obs.decision.reason.clone()));
    }
    let fresh = examine(&obs.via, &obs.device, &opts, root)
        .with_context(|| format!("re-probing the {what} before acting"))?;
    let kind = match (obs.decision.kind, fresh.decision.kind) {
        (_, DecisionKind::Mounted) => DecisionKind::Mounted,
        (then, now) if then == now => now,
        (then, now) => {
            return Err(refused(format!(
                "the disk changed since it was observed (then: {then}, now: {now}): {}",
                fresh.decision.reason
            )))
        }
    };
    let target = probe::mount_target(root, &opts.mount_point);
    let (action, uuid, mounted_now) = match kind {
        DecisionKind::Format => {
            FormatMarker {
                via: obs.via.clone(),
                device: obs.device.clone(),
                size_bytes: fresh.report.size_bytes,
                label: opts.label.clone(),
            }
            .write(root, purpose)?;
            apply::make_ext4(&obs.device, &opts.label)?;
            // Confirm from the disk alone: the marker would make our ext4 read as
            // "interrupted" until it is cleared.
            let mut report = probe::examine(&obs.device, &opts, root)
                .with_context(|| format!("re-probing the {what} after mkfs.ext4"))?;
            report.interrupted_format = false;
            let confirmed = decide::decide(&obs.device, &report, &opts);
            if confirmed.kind != DecisionKind::Reuse {
                bail!(
                    "mkfs.ext4 finished but the re-probe of {} does not show our ext4 ({}: {}); not mounting it",
                    obs.device.display(),
                    confirmed.kind,
                    confirmed.reason
                );
            }
            let uuid = report.uuid().map(str::to_string).with_context(|| {
                format!(
                    "libblkid reported no filesystem UUID for {}",
                    obs.device.display()
                )
            })?;
            // Cleared before the first mount: while the marker exists the disk holds no data.
            FormatMarker::clear(root, purpose)?;
            (DiskAction::Formatted, uuid, true)
        }
        DecisionKind::Reuse => {
            if let Some(problem) = apply::check_ext4(&obs.device)? {
                return Err(refused(problem));
            }
            let uuid = uuid_of(&fresh)?;
            // A marker can only be left for some other disk here; it is obsolete.
            FormatMarker::clear(root, purpose)?;
            (DiskAction::Reused, uuid, true)
        }
        DecisionKind::Mounted => {
            FormatMarker::clear(root, purpose)?;
            (DiskAction::AlreadyMounted, uuid_of(&fresh)?, false)
        }
        DecisionKind::Refuse => unreachable!("a refusal never gets past the agreement check"),
    };
    if mounted_now {
        apply::check_mount_point(&target, what)?;
    }
    // Persisted before the mount: systemd mounts from this unit. The filesystem is already
    // confirmed ours (after mkfs) or checked (e2fsck), so a boot after a crash here may
    // mount it.
    let persisted = unit::persist(root, purpose, &opts.mount_point, &uuid)
        .with_context(|| format!("persisting the {what} mount"))?;
    if mounted_now {
        let (device, mount_point) = (obs.device.display(), target.display());
        match mounter {
            Mounter::Syscall => {
                tracing::info!(step = "disk", action = "mount", %device, %mount_point, "mounting the {what} with mount(2)");
                apply::mount_syscall(&obs.device, &target)?
            }
            Mounter::Systemd(start) => {
                let unit = unit::unit_name(&opts.mount_point);
                tracing::info!(step = "disk", action = "mount", %device, %mount_point, %unit, "mounting the {what}: systemd starts {unit}");
                start(&unit).with_context(|| {
                    format!("mounting {device} at {mount_point} by starting {unit}")
                })?
            }
        }
        apply::confirm_mounted(&obs.device, &target, what)?;
    }
    let outcome = DiskOutcome {
        device: obs.device.clone(),
        uuid,
        action,
        mounted_now,
        persisted,
    };
    tracing::info!(
        step = "disk",
        device = %outcome.device.display(),
        action = ?outcome.action,
        changed = outcome.changed(),
        "{what} ready at {}",
        opts.mount_point.display()
    );
    Ok(outcome)
}

fn uuid_of(obs: &DiskObservation) -> Result<String> {
    obs.report.uuid().map(str::to_string).with_context(|| {
        format!(
            "libblkid reported no filesystem UUID for {}",
            obs.device.display()
        )
    })
}
