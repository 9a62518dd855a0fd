//! The data disk across runs and rebuilds, discovery timing, and `disk inspect`.

mod disk_support;

use canarie_agent::config::DataDiskConfig;
use canarie_agent::disk::{self, DecisionKind, DiskAction, Refused};
use disk_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn format_and_mount(lab: &mut Lab, image: &Path) -> (PathBuf, canarie_agent::paths::Root, String) {
    let dev = lab.attach(image);
    let root = lab.root("first-life");
    Lab::link_lun(&root, LinkScheme::ByLun, 0, &dev);
    let cfg = config(0);
    let out = disk::apply(&disk::observe(&cfg, &root).unwrap(), &cfg, &root).unwrap();
    assert_eq!(out.action, DiskAction::Formatted);
    (dev, root, out.uuid)
}

#[test]
fn reuse_after_rebuild_keeps_the_data() {
    let mut lab = Lab::new();
    let img = lab.image("disk.img", GIB);
    let (dev, first, uuid) = format_and_mount(&mut lab, &img);
    let mounted = first.join(MOUNT_POINT);
    std::fs::create_dir_all(mounted.join("replicas")).unwrap();
    std::fs::write(mounted.join("replicas/volume-head.img"), b"replica data").unwrap();
    lab.unmount(&mounted);

    // A rebuilt VM: new OS disk, so no unit, no mount point, no agent state at all.
    let rebuilt = lab.root("second-life");
    Lab::link_lun(&rebuilt, LinkScheme::ByLun, 0, &dev);
    let cfg = config(0);
    let obs = disk::observe(&cfg, &rebuilt).unwrap();
    assert_eq!(obs.decision.kind, DecisionKind::Reuse, "{:?}", obs.decision);
    let out = disk::apply(&obs, &cfg, &rebuilt).unwrap();
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
    let mut lab = Lab::new();
    let img = lab.image("disk.img", GIB);
    let (_dev, root, uuid) = format_and_mount(&mut lab, &img);
    // As if the run died between mount and persisting it.
    std::fs::remove_dir_all(root.join("/etc/systemd")).unwrap();
    let cfg = config(0);
    let obs = disk::observe(&cfg, &root).unwrap();
    assert_eq!(obs.decision.kind, DecisionKind::Mounted);
    let out = disk::apply(&obs, &cfg, &root).unwrap();
    assert_eq!(out.action, DiskAction::AlreadyMounted);
    assert!(out.persisted.changed() && !out.mounted_now);
    assert_eq!(out.uuid, uuid);
    let unit =
        std::fs::read_to_string(root.join("/etc/systemd/system/var-lib-longhorn.mount")).unwrap();
    assert!(unit.contains(&uuid));
}

#[test]
fn a_stale_observation_never_formats_a_disk_that_changed() {
    let mut lab = Lab::new();
    let img = lab.image("disk.img", GIB);
    let dev = lab.attach(&img);
    let root = lab.root("root");
    Lab::link_lun(&root, LinkScheme::ByLun, 0, &dev);
    let cfg = config(0);
    let obs = disk::observe(&cfg, &root).unwrap();
    assert_eq!(obs.decision.kind, DecisionKind::Format);
    // Between plan and apply, someone puts data on the disk.
    sh(&format!("mkfs.xfs -q '{}'", dev.display()));
    let before = content_digest(&img);
    let err = disk::apply(&obs, &cfg, &root).unwrap_err();
    let refused = err
        .downcast_ref::<Refused>()
        .unwrap_or_else(|| panic!("{err:#}"));
    assert!(
        refused.reason.contains("changed since it was observed") && refused.reason.contains("xfs"),
        "{}",
        refused.reason
    );
    assert_eq!(content_digest(&img), before);
}

#[test]
fn a_link_that_appears_late_is_found() {
    let mut lab = Lab::new();
    let img = lab.image("disk.img", GIB);
    let dev = lab.attach(&img);
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
    let a = lab.image("a.img", GIB);
    let b = lab.image("b.img", GIB);
    sh(&format!("mkfs.xfs -q '{}'", b.display()));
    let dev_a = lab.attach(&a);
    let dev_b = lab.attach(&b);
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
    let blank = lab.image("blank.img", GIB);
    let xfs = lab.image("xfs.img", GIB);
    sh(&format!("mkfs.xfs -q -L scratch '{}'", xfs.display()));
    let blank_dev = lab.attach(&blank);
    let xfs_dev = lab.attach(&xfs);
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
    let mut lab = Lab::new();
    let img = lab.image("disk.img", GIB);
    let (dev, root, _) = format_and_mount(&mut lab, &img);
    let root_dir = root.dir().to_str().unwrap().to_string();
    let out = agent(&[
        "--root",
        &root_dir,
        "disk",
        "inspect",
        "--json",
        dev.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)["decision"], "mounted");
    // Another mount point: our disk is in use elsewhere.
    let out = agent(&[
        "--root",
        &root_dir,
        "disk",
        "inspect",
        "--json",
        "--mount-point",
        "/srv/other",
        dev.to_str().unwrap(),
    ]);
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
    let mut lab = Lab::new();
    let blank = lab.image("blank.img", GIB);
    let other = lab.image("other.img", GIB);
    sh(&format!("mkfs.ext4 -q -F -L other '{}'", other.display()));
    let blank_dev = lab.attach(&blank);
    let other_dev = lab.attach(&other);
    let root = lab.root("root");
    lab.mount(&other_dev, &format!("root{MOUNT_POINT}"), "ro,noload");
    Lab::link_lun(&root, LinkScheme::ByLun, 0, &blank_dev);
    let cfg = config(0);
    let before = content_digest(&blank);
    let obs = disk::observe(&cfg, &root).unwrap();
    assert_eq!(obs.decision.kind, DecisionKind::Refuse);
    assert!(
        obs.decision
            .reason
            .contains("already has another filesystem mounted on it"),
        "{}",
        obs.decision.reason
    );
    assert!(disk::apply(&obs, &cfg, &root)
        .unwrap_err()
        .downcast_ref::<Refused>()
        .is_some());
    assert_eq!(content_digest(&blank), before);
}

#[test]
fn a_format_killed_before_the_superblock_is_finished_by_the_next_run() {
    let mut lab = Lab::new();
    let img = lab.image("disk.img", GIB);
    // What a killed mkfs.ext4 leaves: metadata written, primary superblock not yet.
    sh(&format!("mkfs.ext4 -q -F -L {LABEL} '{}'", img.display()));
    poke(&img, 0, &[0u8; 4096]);
    let dev = lab.attach(&img);
    let root = lab.root("root");
    let link = Lab::link_lun(&root, LinkScheme::ByLun, 0, &dev);
    let cfg = config(0);

    // Without the marker nobody can tell this from foreign data: refused, untouched.
    let (_, reason) = assert_refused_untouched(&img, &cfg, &root);
    assert!(
        reason.contains("non-zero data in its first MiB"),
        "{reason}"
    );

    // The marker the interrupted run wrote before starting mkfs.
    disk::FormatMarker {
        via: link,
        device: dev.clone(),
        size_bytes: GIB,
        label: LABEL.into(),
    }
    .write(&root)
    .unwrap();
    let obs = disk::observe(&cfg, &root).unwrap();
    assert_eq!(
        obs.decision.kind,
        DecisionKind::Format,
        "{:?}",
        obs.decision
    );
    assert!(
        obs.decision.reason.contains("interrupted"),
        "{}",
        obs.decision.reason
    );
    let out = disk::apply(&obs, &cfg, &root).unwrap();
    assert_eq!(out.action, DiskAction::Formatted);
    assert!(lab.is_mounted(&root.join(MOUNT_POINT)));
    assert!(
        !root.join(disk::FORMAT_MARKER).exists(),
        "the marker is gone once the format is confirmed"
    );
    assert_eq!(
        disk::observe(&cfg, &root).unwrap().decision.kind,
        DecisionKind::Mounted
    );
}
