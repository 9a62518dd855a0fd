//! One test per row of the decision table in the disk-safety spec (docs/disk-safety.md), each on a real
//! loop device whose state is built with the spec's commands. Every refused disk is
//! checked byte-for-byte before and after the whole disk step (observe + apply).

mod disk_support;

use canarie_agent::disk::{self, DecisionKind, DiskAction, DiskObservation};
use canarie_agent::paths::Root;
use disk_support::*;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// The refusal checks on the node's disk (the whole disk step, byte-for-byte), and the
/// reason names the device.
fn refused(node: &Node) -> (DiskObservation, String) {
    let (obs, reason) = node.assert_refused();
    assert!(
        reason.contains(&node.dev.display().to_string()),
        "the reason names the device: {reason}"
    );
    (obs, reason)
}

/// A node whose disk was built by the shell command `build` (`{}` is the image), refused.
fn refused_after(build: &str) -> (DiskObservation, String) {
    refused(&Lab::node_with(GIB, shell(build)))
}

fn types(obs: &DiskObservation) -> Vec<&str> {
    obs.signatures().iter().map(|s| s.kind.as_str()).collect()
}

// Row: all zeros -> format ext4 with our label, re-probe, mount.
#[test]
fn all_zeros_is_formatted_confirmed_and_mounted() {
    let node = Lab::node(GIB);

    let obs = node.observe_expecting(DecisionKind::Format);
    assert!(obs.signatures().is_empty());
    let out = node.apply(&obs).unwrap();
    assert_eq!(out.action, DiskAction::Formatted);
    assert!(out.mounted_now && out.changed());

    let blkid = sh_on("blkid -p -o export {}", &node.dev);
    assert!(
        blkid.contains("TYPE=ext4\n") && blkid.contains(&format!("LABEL={LABEL}\n")),
        "{blkid}"
    );
    assert!(blkid.contains(&format!("UUID={}\n", out.uuid)), "{blkid}");
    assert!(node.lab.is_mounted(&node.mount_point()));
    assert!(
        !node.root.join(disk::FORMAT_MARKER).exists(),
        "the format marker is cleared"
    );
    let unit =
        std::fs::read_to_string(node.root.join("/etc/systemd/system/var-lib-longhorn.mount"))
            .unwrap();
    assert!(
        unit.contains(&format!("What=/dev/disk/by-uuid/{}\n", out.uuid)),
        "{unit}"
    );
    assert!(unit.contains("Options=defaults,nofail\n"), "{unit}");
    let link = node
        .root
        .join("/etc/systemd/system/local-fs.target.wants/var-lib-longhorn.mount");
    assert_eq!(
        std::fs::read_link(link).unwrap(),
        PathBuf::from("/etc/systemd/system/var-lib-longhorn.mount")
    );
}

// Row: already mounted at our target with our label -> nothing to do.
#[test]
fn mounted_at_target_is_nothing_to_do_and_a_second_run_changes_nothing() {
    let node = Lab::node(GIB);
    let first = node.converge();
    let unit = node.root.join("/etc/systemd/system/var-lib-longhorn.mount");
    let written = std::fs::metadata(&unit).unwrap().modified().unwrap();

    let again = node.observe_expecting(DecisionKind::Mounted);
    assert!(again.decision.reason.contains("nothing to do"));
    let out = node.apply(&again).unwrap();
    assert_eq!(out.action, DiskAction::AlreadyMounted);
    assert_eq!(out.uuid, first.uuid);
    assert!(
        !out.changed(),
        "a converged disk reports no change: {out:?}"
    );
    assert_eq!(
        std::fs::metadata(&unit).unwrap().modified().unwrap(),
        written
    );
}

// Row: no signature but non-zero data in the first or last MiB -> refuse.
#[test]
fn random_data_in_the_first_mib_is_refused() {
    let (obs, reason) =
        refused_after("dd if=/dev/urandom of={} bs=1M count=1 conv=notrunc status=none");
    assert!(obs.signatures().is_empty(), "{:?}", obs.signatures());
    assert!(
        reason.contains("non-zero data in its first MiB") && reason.contains("blkdiscard -z"),
        "{reason}"
    );
}

#[test]
fn random_data_in_the_last_mib_only_is_refused() {
    let (_, reason) = refused_after(&format!(
        "dd if=/dev/urandom of={{}} bs=1M count=1 seek={} conv=notrunc status=none",
        GIB / (1 << 20) - 1
    ));
    assert!(reason.contains("in its last MiB"), "{reason}");
}

#[test]
fn one_byte_at_either_end_of_an_edge_mib_is_refused() {
    // The edges are read in chunks: a single byte on a chunk's last position must count.
    for (offset, edge) in [
        (0, "first"),
        ((1 << 20) - 1, "first"),
        (GIB - (1 << 20), "last"),
        (GIB - 1, "last"),
    ] {
        let (_, reason) = refused_after(&format!(
            "printf '\\001' | dd of={{}} bs=1 seek={offset} conv=notrunc status=none"
        ));
        assert!(
            reason.contains(&format!("in its {edge} MiB")),
            "a byte at {offset}: {reason}"
        );
    }
}

// Row: ext4 with our label -> reuse (e2fsck -p, size check, mount). This is also the
// state a run killed between mkfs and mount leaves: it must never be formatted again.
#[test]
fn our_ext4_is_reused_not_formatted_again() {
    let node = Lab::node_with(GIB, mkfs_ours);
    let uuid = sh_on("blkid -p -s UUID -o value {}", &node.image)
        .trim()
        .to_string();

    let obs = node.observe_expecting(DecisionKind::Reuse);
    let out = node.apply(&obs).unwrap();
    assert_eq!(out.action, DiskAction::Reused);
    assert_eq!(out.uuid, uuid, "the filesystem is the one that was there");
    assert!(node.lab.is_mounted(&node.mount_point()));
}

#[test]
fn our_ext4_larger_than_the_device_is_refused() {
    let node = Lab::node_with(GIB + GIB / 2, |img| {
        mkfs_ours(img);
        std::fs::File::options()
            .write(true)
            .open(img)
            .unwrap()
            .set_len(GIB)
            .unwrap();
    });
    let (_, reason) = refused(&node);
    assert!(
        reason.contains("does not fit") && reason.contains("1.5 GiB"),
        "{reason}"
    );
}

// Row: ext4 with another label -> refuse.
#[test]
fn ext4_with_another_label_is_refused() {
    let (obs, reason) = refused_after("mkfs.ext4 -q -F -L scratch {}");
    assert_eq!(types(&obs), ["ext4"]);
    assert!(
        reason.contains("\"scratch\"") && reason.contains("wrong LUN"),
        "{reason}"
    );
}

// Row: xfs, btrfs, vfat, iso9660, swap, LUKS, LVM2 PV, md member, zfs member -> refuse.
fn foreign(build: &str, expect: &str) {
    let (obs, reason) = refused_after(build);
    assert!(
        types(&obs).iter().all(|t| *t == expect),
        "{:?}",
        types(&obs)
    );
    assert!(
        reason.contains(expect) && reason.contains("wipefs -a"),
        "{reason}"
    );
}

#[test]
fn xfs_is_refused() {
    foreign("mkfs.xfs -q {}", "xfs");
}

#[test]
fn btrfs_is_refused() {
    foreign("mkfs.btrfs -q {}", "btrfs");
}

#[test]
fn vfat_is_refused() {
    foreign("mkfs.vfat {} >/dev/null", "vfat");
}

#[test]
fn swap_signature_is_refused() {
    foreign("mkswap {} >/dev/null 2>&1", "swap");
}

#[test]
fn luks_is_refused() {
    foreign(
        "printf pass | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 {} -",
        "crypto_LUKS",
    );
}

#[test]
fn iso9660_is_refused() {
    // The primary volume descriptor's magic, as an ISO image has at 32 KiB.
    let node = Lab::node_with(GIB, |img| poke(img, 0x8000, b"\x01CD001\x01"));
    let (obs, reason) = refused(&node);
    assert_eq!(types(&obs), ["iso9660"]);
    assert!(reason.contains("ISO 9660"), "{reason}");
}

#[test]
fn lvm_physical_volume_is_refused() {
    let node = Lab::node(GIB);
    // pvcreate wants a block device; it only writes the PV label (no device-mapper here).
    sh_on("pvcreate -q -y {}", &node.dev);
    let (obs, reason) = refused(&node);
    assert_eq!(types(&obs), ["LVM2_member"]);
    assert!(reason.contains("LVM physical volume"), "{reason}");
}

#[test]
fn md_member_is_refused() {
    let (obs, reason) = refused(&Lab::node_with(GIB, write_md_superblock));
    assert_eq!(types(&obs), ["linux_raid_member"]);
    assert!(reason.contains("md RAID member"), "{reason}");
}

#[test]
fn zfs_member_is_refused() {
    let (obs, reason) = refused(&Lab::node_with(GIB, write_zfs_uberblocks));
    assert_eq!(types(&obs), ["zfs_member"]);
    assert!(reason.contains("ZFS pool member"), "{reason}");
}

// Row: GPT or MBR partition table, with or without partitions -> refuse, say wipefs -a.
fn partitioned(build: &str, expect: &str) {
    let (_, reason) = refused_after(build);
    assert!(
        reason.contains(expect) && reason.contains("wipefs -a /dev/loop"),
        "{reason}"
    );
}

#[test]
fn gpt_with_a_partition_is_refused() {
    partitioned(
        "sgdisk -o -n1:0:0 {} >/dev/null",
        "gpt partition table with 1 partition",
    );
}

#[test]
fn empty_gpt_is_refused() {
    partitioned(
        "sgdisk -o {} >/dev/null",
        "gpt partition table with no partitions",
    );
}

#[test]
fn mbr_with_a_partition_is_refused() {
    partitioned(
        "printf 'label: dos\\n,,L\\n' | sfdisk -q {}",
        "dos partition table with 1 partition",
    );
}

#[test]
fn empty_mbr_is_refused() {
    partitioned(
        "printf 'label: dos\\n' | sfdisk -q {}",
        "dos partition table with no partitions",
    );
}

// Row: only the backup GPT left -> refuse.
#[test]
fn backup_gpt_alone_is_refused() {
    let node = Lab::node_with(GIB, |img| {
        sh_on("sgdisk -o -n1:0:0 {} >/dev/null", img);
        sh_on(
            "dd if=/dev/zero of={} bs=1M count=1 conv=notrunc status=none",
            img,
        );
    });
    let (obs, reason) = refused(&node);
    assert_eq!(types(&obs), ["gpt"]);
    assert_eq!(
        obs.signatures()[0].offset,
        GIB - 512,
        "the backup header is in the last sector"
    );
    assert!(
        !obs.report.nonzero_head,
        "the first MiB is zeros, only the probe sees the table"
    );
    assert!(reason.contains("backup GPT"), "{reason}");
}

// Row: ext4 with a bad superblock checksum -> refuse, suggest e2fsck.
#[test]
fn ext4_with_a_bad_superblock_checksum_is_refused() {
    let node = Lab::node_with(GIB, |img| {
        mkfs_ours(img);
        flip(img, 1024 + 0x78);
    });
    let (obs, reason) = refused(&node);
    assert!(
        obs.signatures()
            .iter()
            .any(|s| s.kind == "ext4" && s.bad_checksum),
        "{:?}",
        obs.signatures()
    );
    assert!(
        reason.contains("bad superblock checksum") && reason.contains("e2fsck -n"),
        "{reason}"
    );
}

// Row: ambivalent (two signatures) -> refuse and list every signature.
#[test]
fn ambivalent_disk_is_refused_with_every_signature() {
    let node = Lab::node_with(GIB, |img| {
        sh_on("mkfs.xfs -q {}", img);
        poke(img, 0x8000, b"\x01CD001\x01");
    });
    let (obs, reason) = refused(&node);
    assert_eq!(obs.report.safe, disk::SafeProbe::Ambivalent);
    assert_eq!(types(&obs), ["xfs", "iso9660"]);
    assert!(
        reason.contains("ambivalent") && reason.contains("xfs") && reason.contains("iso9660"),
        "{reason}"
    );
}

// Row: in use (mounted elsewhere, holders, active swap; O_EXCL open fails) -> refuse.
#[test]
fn our_disk_mounted_elsewhere_is_refused() {
    let node = Lab::node_with(GIB, mkfs_ours);
    // Read-only and without the journal, so the mount itself writes nothing.
    let elsewhere = node.lab.mount(&node.dev, "elsewhere", "ro,noload");
    let (_, reason) = refused(&node);
    assert!(
        reason.contains(&format!("mounted at {}", elsewhere.display())),
        "{reason}"
    );
    assert!(reason.contains("EBUSY"), "{reason}");
}

#[test]
fn active_swap_is_refused() {
    let mut node = Lab::node_with(GIB, shell("mkswap {} >/dev/null 2>&1"));
    node.lab.swapon(&node.dev);
    let (_, reason) = refused(&node);
    assert!(reason.contains("active swap"), "{reason}");
}

#[test]
fn exclusively_held_disk_is_refused() {
    let node = Lab::node(GIB);
    // md, dm and bcache claim their members exactly like this: an O_EXCL open.
    let _holder = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&node.dev)
        .unwrap();
    let (_, reason) = refused(&node);
    assert!(
        reason.contains("in use") && reason.contains("EBUSY"),
        "{reason}"
    );
}

// Row: smaller than the configured minimum -> refuse.
#[test]
fn disk_smaller_than_the_minimum_is_refused() {
    let mut node = Lab::node(GIB);
    node.cfg.min_size_gib = 2;
    let (_, reason) = node.assert_refused();
    assert!(
        reason.contains("smaller than data_disk.min_size_gib (2 GiB)"),
        "{reason}"
    );
}

// Row: missing after the deadline -> fail loudly, name both link schemes.
#[test]
fn missing_disk_fails_naming_both_link_schemes() {
    let lab = Lab::new();
    let root = lab.root("root");
    let cfg = canarie_agent::config::DataDiskConfig {
        wait_seconds: 1,
        ..config(7)
    };
    let err = disk::observe(&cfg, &root).expect_err("no disk at LUN 7");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("/dev/disk/azure/data/by-lun/7") && msg.contains("/dev/disk/azure/scsi1/lun7"),
        "{msg}"
    );
    assert!(msg.contains("LUN 7") && msg.contains("after 1 s"), "{msg}");
    assert!(!root.join(MOUNT_POINT).exists());
}

// Finding the disk: the target must not be the disk holding `/`.
#[test]
fn the_root_disk_is_refused() {
    let lab = Lab::new();
    let source = sh("findmnt -n -o SOURCE /");
    let source = PathBuf::from(source.trim());
    let is_block = std::fs::metadata(&source)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    if !is_block {
        eprintln!("skipped: / is on {}, not a block device", source.display());
        return;
    }
    // Whole disk if / is on one, else the partition's parent disk.
    let pk = sh(&format!("lsblk -n -d -o PKNAME '{}'", source.display()));
    let disk = match pk.trim() {
        "" => source.clone(),
        parent => PathBuf::from(format!("/dev/{parent}")),
    };
    let root = lab.root("root");
    let cfg = canarie_agent::config::DataDiskConfig {
        device: Some(disk.clone()),
        ..config(0)
    };
    let obs = disk::observe(&cfg, &root).unwrap();
    assert_eq!(
        obs.decision.kind,
        DecisionKind::Refuse,
        "{:?}",
        obs.decision
    );
    assert!(
        obs.report.holds_root && obs.decision.reason.contains("root filesystem"),
        "{:?}",
        obs.decision
    );
    let err = disk::apply(
        &obs,
        &cfg,
        &Root::new(lab.path("root")),
        &disk::Mounter::Syscall,
    )
    .unwrap_err();
    assert!(err.downcast_ref::<disk::Refused>().is_some());
}
