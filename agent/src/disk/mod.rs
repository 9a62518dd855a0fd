//! The Longhorn data disk: find it by LUN, probe it with libblkid, format only a blank
//! disk, reuse our own, refuse everything else, mount it for good.
//! See docs/disk-safety.md.
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
pub(crate) mod sysfs;
mod unit;

pub use blkid::{SafeProbe, SafeValues, Signature};
pub use discover::lun_links;
pub use marker::{FormatMarker, FORMAT_MARKER};
pub use unit::{escape_path, unit_name, Persisted, SYSTEMD_UNIT_DIR};

use crate::config::DataDiskConfig;
use crate::paths::Root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the disk is expected to be: the part of the config the decision uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectOptions {
    /// The ext4 label the agent formats with and recognises as its own.
    pub label: String,
    /// Smaller disks are refused.
    pub min_size_gib: u64,
    /// Where the disk belongs (a node path; resolved under the root).
    pub mount_point: PathBuf,
}

impl From<&DataDiskConfig> for InspectOptions {
    fn from(cfg: &DataDiskConfig) -> Self {
        InspectOptions {
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
pub fn observe(cfg: &DataDiskConfig, root: &Root) -> Result<DiskObservation> {
    observe_within(cfg, root, Duration::from_secs(cfg.wait_seconds))
}

/// [`observe`] with an explicit wait (`plan` may not want to wait for a late link).
pub fn observe_within(
    cfg: &DataDiskConfig,
    root: &Root,
    wait: Duration,
) -> Result<DiskObservation> {
    let found = discover::find(cfg, root, wait)?;
    let obs = examine(&found.via, &found.device, &InspectOptions::from(cfg), root)?;
    tracing::info!(
        step = "disk",
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
    cfg: &DataDiskConfig,
    root: &Root,
    mounter: &Mounter<'_>,
) -> Result<DiskOutcome> {
    let opts = InspectOptions::from(cfg);
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
        .context("re-probing the data disk before acting")?;
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
            .write(root)?;
            apply::make_ext4(&obs.device, &opts.label)?;
            // Confirm from the disk alone: the marker would make our ext4 read as
            // "interrupted" until it is cleared.
            let mut report = probe::examine(&obs.device, &opts, root)
                .context("re-probing the data disk after mkfs.ext4")?;
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
            FormatMarker::clear(root)?;
            (DiskAction::Formatted, uuid, true)
        }
        DecisionKind::Reuse => {
            if let Some(problem) = apply::check_ext4(&obs.device)? {
                return Err(refused(problem));
            }
            let uuid = uuid_of(&fresh)?;
            // A marker can only be left for some other disk here; it is obsolete.
            FormatMarker::clear(root)?;
            (DiskAction::Reused, uuid, true)
        }
        DecisionKind::Mounted => {
            FormatMarker::clear(root)?;
            (DiskAction::AlreadyMounted, uuid_of(&fresh)?, false)
        }
        DecisionKind::Refuse => unreachable!("a refusal never gets past the agreement check"),
    };
    if mounted_now {
        apply::check_mount_point(&target)?;
    }
    // Persisted before the mount: systemd mounts from this unit. The filesystem is already
    // confirmed ours (after mkfs) or checked (e2fsck), so a boot after a crash here may
    // mount it.
    let persisted =
        unit::persist(root, &opts.mount_point, &uuid).context("persisting the data disk mount")?;
    if mounted_now {
        let (device, mount_point) = (obs.device.display(), target.display());
        match mounter {
            Mounter::Syscall => {
                tracing::info!(step = "disk", action = "mount", %device, %mount_point, "mounting the data disk with mount(2)");
                apply::mount_syscall(&obs.device, &target)?
            }
            Mounter::Systemd(start) => {
                let unit = unit::unit_name(&opts.mount_point);
                tracing::info!(step = "disk", action = "mount", %device, %mount_point, %unit, "mounting the data disk: systemd starts {unit}");
                start(&unit).with_context(|| {
                    format!("mounting {device} at {mount_point} by starting {unit}")
                })?
            }
        }
        apply::confirm_mounted(&obs.device, &target)?;
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
        "data disk ready at {}",
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
