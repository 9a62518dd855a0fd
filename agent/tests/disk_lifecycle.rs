//! The data disk across runs and rebuilds, discovery timing, and `disk inspect`.

mod disk_support;

use canarie_agent::config::DataDiskConfig;
use canarie_agent::disk::{self, DecisionKind, DiskAction, Refused};
use disk_support::*;
use std::process::{Command, Output};
use std::time::Duration;

/// A node whose blank disk the disk step formatted and mounted; the filesystem's UUID.
fn formatted_node() -> (Node, String) {
    let node = Lab::node(GIB);
    let out = node.converge();
    assert_eq!(out.action, DiskAction::Formatted);
    (node, out.uuid)
}

#[test]
fn reuse_after_rebuild_keeps_the_data() {
    let (first, uuid) = formatted_node();
    let mounted = first.mount_point();
    std::fs::create_dir_all(mounted.join("replicas")).unwrap();
    std::fs::write(mounted.join("replicas/volume-head.img"), b"replica data").unwrap();
    first.lab.unmount(&mounted);

    // A rebuilt VM: new OS disk, so no unit, no mount point, no agent state at all.
    let rebuilt = first.lab.root("second-life");
    Lab::link_lun(&rebuilt, LinkScheme::ByLun, 0, &first.dev);
    let cfg = config(0);
    let obs = disk::observe(&cfg, &rebuilt).unwrap();
    assert_eq!(obs.decision.kind, DecisionKind::Reuse, "{:?}", obs.decision);
    let out = disk::apply(&obs, &cfg, &rebuilt, &disk::Mounter::Syscall).unwrap();
    assert_eq!(out.action, DiskAction::Reused);
    assert_eq!(out.uuid, uuid, "same filesystem: nothing was formatted");
    let data = std::fs::read(rebuilt.join(MOUNT_POINT).join("replicas/volume-head.img")).unwrap();
    assert_eq!(data, b"replica data");
    assert!(rebuilt
        .join("/etc/systemd/system/var-lib-longhorn.mount")
        .exists());
}

#[test]
fn killed_after_mount_before_the_unit_is_written_converges() {
    let (node, uuid) = formatted_node();
    // As if the run died between mount and persisting it.
    std::fs::remove_dir_all(node.root.join("/etc/systemd")).unwrap();
    let obs = node.observe_expecting(DecisionKind::Mounted);
    let out = node.apply(&obs).unwrap();
    assert_eq!(out.action, DiskAction::AlreadyMounted);
    assert!(out.persisted.changed() && !out.mounted_now);
    assert_eq!(out.uuid, uuid);
    let unit =
        std::fs::read_to_string(node.root.join("/etc/systemd/system/var-lib-longhorn.mount"))
            .unwrap();
    assert!(unit.contains(&uuid));
}

#[test]
fn a_stale_observation_never_formats_a_disk_that_changed() {
    let node = Lab::node(GIB);
    let obs = node.observe_expecting(DecisionKind::Format);
    // Between plan and apply, someone puts data on the disk.
    sh_on("mkfs.xfs -q {}", &node.dev);
    let before = content_digest(&node.image);
    let err = node.apply(&obs).unwrap_err();
    let refused = err
        .downcast_ref::<Refused>()
        .unwrap_or_else(|| panic!("{err:#}"));
    assert!(
        refused.reason.contains("changed since it was observed") && refused.reason.contains("xfs"),
        "{}",
        refused.reason
    );
    assert_eq!(content_digest(&node.image), before);
}

#[test]
fn a_link_that_appears_late_is_found() {
    let mut lab = Lab::new();
    let (_, dev) = lab.disk("disk.img", GIB, |_| {});
    let root = lab.root("root");
    let cfg = DataDiskConfig {
        wait_seconds: 30,
        ..config(3)
    };
    // The older WALinuxAgent scheme, created by "udev" 3 s after the agent starts looking.
    let link = std::thread::scope(|s| {
        let udev = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            Lab::link_lun(&root, LinkScheme::Scsi1, 3, &dev)
        });
        let obs = disk::observe(&cfg, &root).unwrap();
        let link = udev.join().unwrap();
        assert_eq!(obs.via, link);
        assert_eq!(obs.device, dev);
        assert_eq!(obs.decision.kind, DecisionKind::Format);
        link
    });
    assert!(link.ends_with("dev/disk/azure/scsi1/lun3"));
}

#[test]
fn by_lun_is_preferred_and_an_explicit_device_wins() {
    let mut lab = Lab::new();
    let (_, dev_a) = lab.disk("a.img", GIB, |_| {});
    let (_, dev_b) = lab.disk("b.img", GIB, shell("mkfs.xfs -q {}"));
    let root = lab.root("root");
    Lab::link_lun(&root, LinkScheme::ByLun, 1, &dev_a);
    Lab::link_lun(&root, LinkScheme::Scsi1, 1, &dev_b);
    let by_lun = disk::observe(&config(1), &root).unwrap();
    assert_eq!(
        by_lun.device, dev_a,
        "azure-vm-utils' by-lun link comes first"
    );
    let explicit = DataDiskConfig {
        device: Some(dev_b.clone()),
        ..config(1)
    };
    let obs = disk::observe(&explicit, &root).unwrap();
    assert_eq!(obs.device, dev_b);
    assert_eq!(obs.decision.kind, DecisionKind::Refuse);
}

#[test]
fn content_digest_sees_one_byte_and_ignores_sparseness() {
    let lab = Lab::new();
    let sparse = lab.image("sparse.img", 8 << 20);
    let dense = lab.path("dense.img");
    sh(&format!(
        "dd if=/dev/zero of='{}' bs=1M count=8 status=none",
        dense.display()
    ));
    assert_eq!(content_digest(&sparse), content_digest(&dense));
    flip(&dense, 5 << 20);
    assert_ne!(content_digest(&sparse), content_digest(&dense));
}

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canarie-agent"))
        .args(args)
        .env("CANARIE_LOG", "warn")
        .output()
        .expect("run canarie-agent")
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn inspect_prints_the_decision_and_exits_by_it() {
    let mut lab = Lab::new();
    let (_, blank_dev) = lab.disk("blank.img", GIB, |_| {});
    let (xfs, xfs_dev) = lab.disk("xfs.img", GIB, shell("mkfs.xfs -q -L scratch {}"));
    let before = content_digest(&xfs);

    let out = agent(&["disk", "inspect", "--json", blank_dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let v = json_of(&out);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["decision", "device", "reason", "signatures"]);
    assert_eq!(v["decision"], "format");
    assert_eq!(v["device"], blank_dev.to_str().unwrap());
    assert_eq!(v["signatures"], serde_json::json!([]));

    let out = agent(&["disk", "inspect", "--json", xfs_dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_of(&out);
    assert_eq!(v["decision"], "refuse");
    assert_eq!(
        v["signatures"],
        serde_json::json!([{"type": "xfs", "usage": "filesystem", "offset": 0, "label": "scratch"}])
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("canarie-agent: refusing {}: ", xfs_dev.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("wipefs -a {}", xfs_dev.display())),
        "{stderr}"
    );

    let text = agent(&["disk", "inspect", xfs_dev.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("decision:   refuse") && text.contains("label \"scratch\""),
        "{text}"
    );
    assert_eq!(content_digest(&xfs), before, "inspect is read-only");
}

#[test]
fn inspect_reports_mounted_under_the_root_it_is_given() {
    let (node, _) = formatted_node();
    let root_dir = node.root.dir().to_str().unwrap();
    let dev = node.dev.to_str().unwrap();
    let inspect = |options: &[&str]| {
        agent(
            &[
                &["--root", root_dir, "disk", "inspect", "--json"],
                options,
                &[dev],
            ]
            .concat(),
        )
    };
    let out = inspect(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["decision"], "mounted");
    // Another mount point: our disk is in use elsewhere.
    let out = inspect(&["--mount-point", "/srv/other"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["signatures"][0]["label"], LABEL);
}

#[test]
fn inspect_errors_exit_2() {
    let lab = Lab::new();
    let missing = agent(&["disk", "inspect", "/dev/canarie-no-such-disk"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no such device /dev/canarie-no-such-disk"),
        "{stderr}"
    );

    let file = lab.image("plain-file", 1 << 20);
    let not_block = agent(&["disk", "inspect", file.to_str().unwrap()]);
    assert_eq!(not_block.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_block.stderr).contains("is not a block device"));

    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_canarie-agent"))
        .args(["disk", "inspect", "/dev/null"])
        .output()
        .expect("setpriv runs");
    assert_eq!(as_nobody.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&as_nobody.stderr).contains("must run as root"));
}

#[test]
fn a_mount_point_taken_by_another_filesystem_is_refused() {
    let mut node = Lab::node(GIB);
    let (_, other_dev) = node
        .lab
        .disk("other.img", GIB, shell("mkfs.ext4 -q -F -L other {}"));
    node.lab
        .mount(&other_dev, &format!("root{MOUNT_POINT}"), "ro,noload");
    let before = content_digest(&node.image);
    let obs = node.observe_expecting(DecisionKind::Refuse);
    assert!(
        obs.decision
            .reason
            .contains("already has another filesystem mounted on it"),
        "{}",
        obs.decision.reason
    );
    assert!(node
        .apply(&obs)
        .unwrap_err()
        .downcast_ref::<Refused>()
        .is_some());
    assert_eq!(content_digest(&node.image), before);
}

#[test]
fn a_format_killed_before_the_superblock_is_finished_by_the_next_run() {
    // What a killed mkfs.ext4 leaves: metadata written, primary superblock not yet.
    let node = Lab::node_with(GIB, |img| {
        mkfs_ours(img);
        poke(img, 0, &[0u8; 4096]);
    });

    // Without the marker nobody can tell this from foreign data: refused, untouched.
    let (_, reason) = node.assert_refused();
    assert!(
        reason.contains("non-zero data in its first MiB"),
        "{reason}"
    );

    // The marker the interrupted run wrote before starting mkfs.
    disk::FormatMarker {
        via: node.link.clone(),
        device: node.dev.clone(),
        size_bytes: GIB,
        label: LABEL.into(),
    }
    .write(&node.root, disk::Purpose::LonghornData)
    .unwrap();
    let obs = node.observe_expecting(DecisionKind::Format);
    assert!(
        obs.decision.reason.contains("interrupted"),
        "{}",
        obs.decision.reason
    );
    let out = node.apply(&obs).unwrap();
    assert_eq!(out.action, DiskAction::Formatted);
    assert!(node.lab.is_mounted(&node.mount_point()));
    assert!(
        !node.root.join(disk::FORMAT_MARKER).exists(),
        "the marker is gone once the format is confirmed"
    );
    assert_eq!(node.observe().decision.kind, DecisionKind::Mounted);
}

/// The systemd stand-in's mount: the mount point created, `device` mounted on it.
fn mount_like_systemd(node: &Node, device: &std::path::Path) {
    sh(&format!(
        "mkdir -p '{0}' && mount -t ext4 '{1}' '{0}'",
        node.mount_point().display(),
        device.display()
    ));
}

fn apply_with_systemd(
    node: &Node,
    obs: &disk::DiskObservation,
    systemd: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<disk::DiskOutcome> {
    disk::apply(obs, &node.cfg, &node.root, &disk::Mounter::Systemd(systemd))
}

/// What the systemd stand-in below saw: the unit it was asked to start and the filesystem
/// UUID that unit names.
fn unit_uuid(node: &Node, unit: &str) -> String {
    let text = std::fs::read_to_string(node.root.join("/etc/systemd/system").join(unit))
        .expect("the mount unit is written before systemd is asked to start it");
    text.lines()
        .find_map(|l| l.strip_prefix("What=/dev/disk/by-uuid/"))
        .expect("What= names the filesystem UUID")
        .to_string()
}

#[test]
fn a_mount_made_by_systemd_is_confirmed_from_mountinfo() {
    // On a node the packaged unit's private mount namespace makes systemd the one that
    // mounts: it starts the unit the agent has just written. This stand-in does what
    // systemd would, against the sandbox's mount point.
    let node = Lab::node(GIB);
    let obs = node.observe_expecting(DecisionKind::Format);
    let started = std::sync::Mutex::new(Vec::new());
    let systemd = |unit: &str| -> anyhow::Result<()> {
        let uuid = unit_uuid(&node, unit);
        let on_disk = sh_on("blkid -p -s UUID -o value {}", &node.dev);
        assert_eq!(uuid, on_disk.trim(), "the unit names the new filesystem");
        started.lock().unwrap().push(unit.to_string());
        mount_like_systemd(&node, &node.dev);
        Ok(())
    };
    let out = apply_with_systemd(&node, &obs, &systemd).expect("the disk is mounted and confirmed");
    assert_eq!(out.action, DiskAction::Formatted);
    assert!(out.mounted_now);
    assert_eq!(*started.lock().unwrap(), vec!["var-lib-longhorn.mount"]);
    assert!(node.lab.is_mounted(&node.mount_point()));
}

#[test]
fn a_mount_of_another_disk_is_not_taken_for_the_data_disk() {
    // systemd mounts by filesystem UUID; a second disk with the same UUID (a cloned
    // snapshot) could answer instead. The confirmation compares device numbers.
    let mut node = Lab::node_with(GIB, mkfs_ours);
    let uuid = sh_on("blkid -p -s UUID -o value {}", &node.dev);
    let (_, clone) = node.lab.disk("clone.img", GIB, |img| {
        sh(&format!(
            "mkfs.ext4 -q -L longhorn -U {} '{}'",
            uuid.trim(),
            img.display()
        ));
    });
    let obs = node.observe_expecting(DecisionKind::Reuse);
    let systemd = |_: &str| -> anyhow::Result<()> {
        mount_like_systemd(&node, &clone);
        Ok(())
    };
    let err = apply_with_systemd(&node, &obs, &systemd).expect_err("the wrong disk is mounted");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("not from the data disk") && msg.contains("umount"),
        "{msg}"
    );
}
