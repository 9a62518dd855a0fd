//! The node's disks (the Longhorn data disk, a server's state disk): each found and judged
//! exactly as bootstrap would (the disk module's read-only observe, without waiting for a
//! late link), mounted by UUID, persistently, with room to spare. One set of checks per
//! disk [`Purpose`].

use super::{
    Budget, Check, Options, Outcome, Spec, DATA_DISK, DATA_DISK_MOUNT, DATA_DISK_SPACE,
    SERVER_STATE_DISK, SERVER_STATE_DISK_MOUNT, SERVER_STATE_DISK_SPACE,
};
use crate::config::NodeConfig;
use crate::disk::{self, DecisionKind, DiskObservation, DiskSpec, Purpose};
use crate::paths::Root;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Longhorn stops scheduling replicas on a disk with less free space than this
/// (its `storage-minimal-available-percentage` default).
const LONGHORN_MIN_FREE_PERCENT: u64 = 25;
/// Below this, Longhorn volumes on the node (or etcd on a server state disk) are about to
/// fill up.
const DATA_DISK_FAIL_PERCENT: u64 = 10;

/// The checks of one disk purpose.
pub(super) struct DiskChecks {
    purpose: Purpose,
    /// Found and judged (named after its bootstrap step).
    found: Spec,
    mount: Spec,
    space: Spec,
}

pub(super) const DATA: DiskChecks = DiskChecks {
    purpose: Purpose::LonghornData,
    found: DATA_DISK,
    mount: DATA_DISK_MOUNT,
    space: DATA_DISK_SPACE,
};

pub(super) const SERVER_STATE: DiskChecks = DiskChecks {
    purpose: Purpose::ServerState,
    found: SERVER_STATE_DISK,
    mount: SERVER_STATE_DISK_MOUNT,
    space: SERVER_STATE_DISK_SPACE,
};

pub(super) async fn checks(
    opts: &Options,
    budget: &Budget,
    config: &NodeConfig,
    which: &DiskChecks,
) -> Vec<Check> {
    let purpose = which.purpose;
    let Some(cfg) = DiskSpec::of(config, purpose) else {
        let none = Outcome::skipped(format!("no {} in this node's config", purpose.key()));
        return [&which.found, &which.mount, &which.space]
            .iter()
            .map(|s| super::instant(s, none.clone()))
            .collect();
    };
    let cfg = &cfg;
    let root = opts.cx.root.clone();
    let space = budget.run(&which.space, async {
        let (root, mp) = (root.clone(), cfg.mount_point.clone());
        let outcome = super::blocking(move || space(&root, &mp, purpose))
            .await
            .unwrap_or_else(|e| Outcome::fail(format!("{e:#}"), "report this doctor bug"));
        (outcome, ())
    });
    if !opts.as_root {
        let space = space.await.0;
        return vec![
            super::instant(
                &which.found,
                Outcome::needs_root("probes the disk's block device"),
            ),
            super::instant(
                &which.mount,
                Outcome::needs_root("compares the mount unit with the disk's filesystem UUID"),
            ),
            space,
        ];
    }
    let probe = budget.run(&which.found, async {
        let (cfg, root) = (cfg.clone(), root.clone());
        // Read-only and without waiting for a late link: doctor reports the disk as it is.
        let observed = super::blocking(move || disk::observe_within(&cfg, &root, Duration::ZERO))
            .await
            .and_then(|r| r);
        match observed {
            Ok(obs) => (decision(&obs, purpose), Some(obs)),
            Err(e) => (not_found(&e, purpose), None),
        }
    });
    let ((disk_check, observed), space) = tokio::join!(probe, space);
    let mount = super::instant(&which.mount, mount_unit(&root, cfg, observed.as_ref()));
    vec![disk_check, mount, space.0]
}

/// `data-disk` / `server-state-disk`: the disk module's decision, as bootstrap would make it now.
fn decision(obs: &DiskObservation, purpose: Purpose) -> Outcome {
    let key = purpose.key();
    let device = obs.device.display();
    let via = if obs.via == obs.device {
        String::new()
    } else {
        format!(" (via {})", obs.via.display())
    };
    let reason = &obs.decision.reason;
    match obs.decision.kind {
        DecisionKind::Mounted => Outcome::ok(format!(
            "{device}{via}: our ext4, UUID {}, mounted at its mount point",
            obs.report.uuid().unwrap_or("unknown")
        )),
        DecisionKind::Reuse => Outcome::warn(
            format!("{device}{via} holds our ext4 but is not mounted: {reason}"),
            "`systemctl restart canarie-agent` checks it (e2fsck -p) and mounts it",
        ),
        DecisionKind::Format => Outcome::warn(
            format!("{device}{via} is blank: bootstrap will format and mount it ({reason})"),
            "`systemctl restart canarie-agent` formats and mounts it",
        ),
        DecisionKind::Refuse => Outcome::fail(
            format!("{device}{via} refused: {reason}"),
            format!(
                "the agent never formats a disk that holds data. If this is the wrong disk, fix {key}.lun / {key}.device; if its content is expendable, wipe it yourself (`wipefs -a {device}` destroys it) and `systemctl restart canarie-agent`. `canarie-agent disk inspect {device}` lists what is on it"
            ),
        ),
    }
}

fn not_found(e: &anyhow::Error, purpose: Purpose) -> Outcome {
    let (key, what) = (purpose.key(), purpose.what());
    Outcome::fail(
        format!("{e:#}"),
        format!("attach the {what} at the LUN in {key}.lun (infra-tofu), or fix {key}.lun / {key}.device; `ls -l /dev/disk/azure/data/by-lun/` lists the LUNs this VM sees"),
    )
}

/// `data-disk-mount`: the mount unit exists, mounts the disk's filesystem by UUID at the
/// mount point, and is enabled, so the disk is mounted again after a reboot.
fn mount_unit(root: &Root, cfg: &DiskSpec, observed: Option<&DiskObservation>) -> Outcome {
    let step = crate::reconcile::steps::disk::step_of(cfg.purpose);
    let Some(obs) = observed else {
        return Outcome::skipped(format!(
            "the {} was not found (see check {step})",
            cfg.purpose.what()
        ));
    };
    let uuid = match (obs.decision.kind, obs.report.uuid()) {
        (DecisionKind::Mounted | DecisionKind::Reuse, Some(uuid)) => uuid,
        _ => {
            return Outcome::skipped(format!(
                "no filesystem of ours on the disk yet (see check {step})"
            ))
        }
    };
    let name = disk::unit_name(&cfg.mount_point);
    let unit = Path::new(disk::SYSTEMD_UNIT_DIR).join(&name);
    let text = match std::fs::read_to_string(root.join(&unit)) {
        Ok(t) => t,
        Err(_) => {
            return Outcome::fail(
                format!(
                    "no mount unit {}: {} would not be mounted after a reboot",
                    unit.display(),
                    cfg.mount_point.display()
                ),
                "`systemctl restart canarie-agent` writes and enables it",
            )
        }
    };
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let what = value("What=");
    let where_ = value("Where=");
    let expected_what = format!("/dev/disk/by-uuid/{uuid}");
    if what != expected_what || Path::new(&where_) != cfg.mount_point {
        return Outcome::fail(
            format!(
                "{name} mounts {what:?} at {where_:?}, but the disk's filesystem is {expected_what} and belongs at {}",
                cfg.mount_point.display()
            ),
            "`systemctl restart canarie-agent` rewrites the unit; then `systemctl daemon-reload`",
        );
    }
    let wants = root.join(
        Path::new(disk::SYSTEMD_UNIT_DIR)
            .join("local-fs.target.wants")
            .join(&name),
    );
    if std::fs::symlink_metadata(&wants).is_err() {
        return Outcome::fail(
            format!("{name} is not enabled: the disk would not be mounted at boot"),
            format!("`systemctl enable {name}`, or `systemctl restart canarie-agent`"),
        );
    }
    Outcome::ok(format!(
        "{name} mounts UUID {uuid} at {}, enabled for local-fs.target",
        cfg.mount_point.display()
    ))
}

/// True when `mount_point` (under `root`) is a mount point: its device differs from its
/// parent's. Needs no root, and tells whether RKE2's config gets the Longhorn disk label.
pub(super) fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != me.dev())
}

/// Whether the node's data disk is mounted, as rendering decides the Longhorn label.
pub(super) fn data_disk_mounted(root: &Root, config: &NodeConfig) -> bool {
    config
        .data_disk
        .as_ref()
        .is_some_and(|d| is_mount_point(&root.join(&d.mount_point)))
}

/// `data-disk-space` / `server-state-disk-space`: free space where Longhorn keeps its
/// replicas, or etcd its database and snapshots.
fn space(root: &Root, mount_point: &Path, purpose: Purpose) -> Outcome {
    let path = root.join(mount_point);
    let step = crate::reconcile::steps::disk::step_of(purpose);
    if !is_mount_point(&path) {
        return Outcome::skipped(format!(
            "nothing is mounted at {} (see check {step})",
            mount_point.display()
        ));
    }
    match super::host::free_space(&path) {
        Ok(free) => {
            let text = format!("{}: {}", mount_point.display(), free.describe());
            let pct = free.free_percent();
            if purpose == Purpose::ServerState {
                return if pct < DATA_DISK_FAIL_PERCENT {
                    Outcome::fail(
                        text,
                        "the server state disk is nearly full: etcd stops accepting writes when its disk fills; lower etcd_snapshots.retention or grow the disk (infra-tofu, then `resize2fs`)",
                    )
                } else {
                    Outcome::ok(text)
                };
            }
            if pct < DATA_DISK_FAIL_PERCENT {
                Outcome::fail(
                    text,
                    "the data disk is nearly full: delete unused Longhorn volumes or snapshots, or grow the disk (infra-tofu data disk size, then `resize2fs`)",
                )
            } else if pct < LONGHORN_MIN_FREE_PERCENT {
                Outcome::warn(
                    text,
                    format!("Longhorn schedules no new replicas on a disk with less than {LONGHORN_MIN_FREE_PERCENT}% free: grow the disk or remove volumes"),
                )
            } else {
                Outcome::ok(text)
            }
        }
        Err(e) => Outcome::fail(format!("{e:#}"), "check the mount"),
    }
}
