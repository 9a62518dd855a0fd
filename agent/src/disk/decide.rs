//! The decision table of docs/disk-safety.md as one pure function.
//!
//! Only two outcomes touch a disk, and each is allowed by a narrow positive test:
//! format when both probes find nothing and the first and last MiB are zeros; reuse
//! when the only signature is a healthy ext4 carrying our label that fits the device.
//! Everything else is a refusal with a reason that says what was found and what a
//! person can do.

use super::blkid::{SafeProbe, Signature};
use super::marker::FORMAT_MARKER;
use super::{Decision, DecisionKind, InspectOptions, ProbeReport};
use std::path::Path;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

pub(crate) fn decide(device: &Path, report: &ProbeReport, opts: &InspectOptions) -> Decision {
    let dev = device.display();
    // The config key and the name of the disk, for the messages.
    let (key, what) = (opts.purpose.key(), opts.purpose.what());
    let refuse = |reason: String| Decision {
        kind: DecisionKind::Refuse,
        reason,
    };
    let wipe_hint =
        format!("if its data is truly unwanted, clear it with `wipefs -a {dev}` and re-run");

    if !report.whole_disk {
        return refuse(format!(
            "{dev} is a partition, not a whole disk; point {key} at the whole disk (its LUN) instead"
        ));
    }
    if report.holds_root {
        return refuse(format!(
            "{dev} holds the root filesystem /; {key} points at the OS disk, fix {key}.lun or {key}.device in the node config"
        ));
    }

    let ours = ours(report, &opts.label);
    if report.mounted_at_target {
        let target = opts.mount_point.display();
        return match ours {
            Some(uuid) => Decision {
                kind: DecisionKind::Mounted,
                reason: format!(
                    "ext4 labelled {:?} (UUID {uuid}) is already mounted at {target}; nothing to do",
                    opts.label
                ),
            },
            None => refuse(format!(
                "{dev} is mounted at {target} but is not ext4 labelled {:?} ({}); unmount it (`umount {target}`) and check {key} in the node config",
                opts.label,
                describe_all(&report.signatures)
            )),
        };
    }
    if let Some(other) = &report.target_taken_by {
        return refuse(format!(
            "{} already has another filesystem mounted on it ({other}), so {dev} cannot be mounted there; unmount it, or set {key}.mount_point to a free directory",
            opts.mount_point.display()
        ));
    }
    if !report.in_use.is_empty() {
        return refuse(format!(
            "{dev} is in use ({}); it belongs to something else on this node: check {key}.lun, and free the disk only if its data is truly unwanted",
            report.in_use.join("; ")
        ));
    }
    let min_bytes = opts.min_size_gib.saturating_mul(GIB);
    if report.size_bytes < min_bytes {
        return refuse(format!(
            "{dev} is {}, smaller than {key}.min_size_gib ({} GiB); probably not the {what}: check {key}.lun, or attach a larger disk",
            human_size(report.size_bytes),
            opts.min_size_gib
        ));
    }

    match &report.safe {
        SafeProbe::Failed(rc) => {
            return refuse(format!(
                "libblkid's safe probe of {dev} failed (return code {rc}), so the disk cannot be shown to be blank; look for I/O errors (`dmesg`) and inspect it with `wipefs --no-act {dev}`"
            ))
        }
        SafeProbe::Ambivalent => {
            return refuse(format!(
                "{dev} is ambivalent: libblkid's safe probe found more than one signature ({}); the disk carries data from more than one tool, so nothing is assumed; {wipe_hint}",
                describe_all(&report.signatures)
            ))
        }
        SafeProbe::Nothing | SafeProbe::Found(_) => {}
    }

    let sigs = &report.signatures;
    if report.interrupted_format {
        // A run killed after mkfs.ext4 completed but before the marker was cleared: the
        // disk already reads as our own, whole ext4 (mke2fs writes the primary superblock
        // last, and e2fsck -p checks it before the mount). Reuse it; formatting it a
        // second time would lose nothing yet, but a completed format is never repeated.
        let as_found = decide(
            device,
            &ProbeReport {
                interrupted_format: false,
                ..report.clone()
            },
            opts,
        );
        if as_found.kind == DecisionKind::Reuse {
            return Decision {
                kind: DecisionKind::Reuse,
                reason: format!(
                    "this agent's own format of {dev} completed before its run was interrupted ({FORMAT_MARKER} names it): {}",
                    as_found.reason
                ),
            };
        }
        // Only what an interrupted mkfs.ext4 can leave: nothing recognisable yet, or a
        // (possibly half-written) ext4 superblock with our label.
        let only_our_ext4 = sigs
            .iter()
            .all(|s| s.kind == "ext4" && s.label.as_deref() == Some(opts.label.as_str()));
        if only_our_ext4 {
            return Decision {
                kind: DecisionKind::Format,
                reason: format!(
                    "this agent's own format of {dev} was interrupted ({FORMAT_MARKER} names it) and the disk holds nothing but that unfinished mkfs ({}); it will be formatted ext4 with label {:?} again",
                    describe_all(sigs),
                    opts.label
                ),
            };
        }
    }
    if sigs.is_empty() {
        if report.safe != SafeProbe::Nothing {
            return refuse(format!(
                "libblkid's safe probe found {} on {dev} but the signature scan found nothing; the probes disagree, so the disk is left alone: inspect it with `wipefs --no-act {dev}`",
                describe_safe(&report.safe)
            ));
        }
        if report.nonzero_head || report.nonzero_tail {
            let where_ = match (report.nonzero_head, report.nonzero_tail) {
                (true, true) => "in its first and last MiB",
                (true, false) => "in its first MiB",
                _ => "in its last MiB",
            };
            return refuse(format!(
                "{dev} has no known signature but holds non-zero data {where_} (a raw data store, an unknown format or a wiped header), so it is not blank; if its data is truly unwanted, zero it (e.g. `blkdiscard -z {dev}`) and re-run"
            ));
        }
        return Decision {
            kind: DecisionKind::Format,
            reason: format!(
                "no signature in either probe and only zeros in the first and last MiB: a blank disk; it will be formatted ext4 with label {:?}",
                opts.label
            ),
        };
    }

    let kinds: std::collections::BTreeSet<&str> = sigs.iter().map(|s| s.kind.as_str()).collect();
    if kinds.len() > 1 && !is_one_partition_table(sigs) {
        return refuse(format!(
            "{dev} is ambivalent: it carries several signatures ({}); nothing is assumed; {wipe_hint}",
            describe_all(sigs)
        ));
    }

    if let Some(bad) = sigs.iter().find(|s| s.bad_checksum) {
        return refuse(format!(
            "{dev} holds {} with a bad superblock checksum: a damaged filesystem, not a blank disk; check it with `e2fsck -n {dev}` (repair with `e2fsck {dev}` if it is the {what}), or, if its data is truly unwanted, `wipefs -a {dev}`",
            describe(bad)
        ));
    }

    if sigs.iter().all(Signature::is_partition_table) {
        let gpt_headers: Vec<&Signature> = sigs.iter().filter(|s| s.kind == "gpt").collect();
        let only_backup_gpt = !gpt_headers.is_empty()
            && gpt_headers.iter().all(|s| s.offset >= MIB)
            && sigs.iter().all(|s| s.kind == "gpt");
        if only_backup_gpt {
            return refuse(format!(
                "{dev} has no primary partition table but still carries a backup GPT header at its end (offset {:#x}): its start was wiped, yet the partitions can be recovered (e.g. `gdisk {dev}`); {wipe_hint} (wipefs also clears the backup)",
                gpt_headers[0].offset
            ));
        }
        let count = match &report.safe {
            SafeProbe::Found(v) => v.partitions,
            _ => None,
        };
        let table = sigs.iter().find(|s| s.kind != "PMBR").unwrap_or(&sigs[0]);
        let entries = match count {
            Some(0) => " with no partitions".to_string(),
            Some(1) => " with 1 partition".to_string(),
            Some(n) => format!(" with {n} partitions"),
            None => String::new(),
        };
        return refuse(format!(
            "{dev} carries a {} partition table{entries} ({}); the agent only formats a blank whole disk; {wipe_hint}",
            table.kind,
            describe_all(sigs)
        ));
    }

    let first = &sigs[0];
    if first.kind == "ext4" && sigs.len() == 1 {
        if first.label.as_deref() != Some(opts.label.as_str()) {
            let labelled = match &first.label {
                Some(l) => format!("labelled {l:?}"),
                None => "with no label".to_string(),
            };
            return refuse(format!(
                "{dev} holds an ext4 filesystem {labelled} (UUID {}), not {:?}: probably not the {what} (wrong LUN?); check {key}.lun; to adopt it on purpose run `e2label {dev} {}`, or if its data is truly unwanted `wipefs -a {dev}`",
                first.uuid.as_deref().unwrap_or("unknown"),
                opts.label,
                opts.label
            ));
        }
        let Some(uuid) = ours else {
            return refuse(format!(
                "the signature scan of {dev} found ext4 labelled {:?} but the safe probe reported {}; the probes disagree, so the disk is left alone: inspect it with `wipefs --no-act {dev}` and `e2fsck -n {dev}`",
                opts.label,
                describe_safe(&report.safe)
            ));
        };
        match report.ext4_bytes {
            Some(fs_bytes) if fs_bytes <= report.size_bytes => {}
            Some(fs_bytes) => {
                return refuse(format!(
                    "{dev} holds our ext4 (UUID {uuid}) but the filesystem says it is {} while the device is only {}: it does not fit (a shrunk disk or a partial copy), and mounting it would fail or corrupt it; check the disk in Azure and run `e2fsck -n {dev}`",
                    human_size(fs_bytes),
                    human_size(report.size_bytes)
                ))
            }
            None => {
                return refuse(format!(
                    "{dev} is reported as ext4 labelled {:?} but its superblock could not be read back; inspect it with `e2fsck -n {dev}`",
                    opts.label
                ))
            }
        }
        return Decision {
            kind: DecisionKind::Reuse,
            reason: format!(
                "ext4 labelled {:?} (UUID {uuid}): the agent's own {what} from an earlier run; it will be checked (`e2fsck -p`) and mounted at {}",
                opts.label,
                opts.mount_point.display()
            ),
        };
    }

    refuse(format!(
        "{dev} holds {}: data the agent did not create (wrong LUN?); check {key}.lun; {wipe_hint}",
        describe_all(sigs)
    ))
}

/// The UUID of our filesystem when the safe probe saw exactly ext4 with our label.
fn ours(report: &ProbeReport, label: &str) -> Option<String> {
    match &report.safe {
        SafeProbe::Found(v)
            if v.fs_type.as_deref() == Some("ext4")
                && v.label.as_deref() == Some(label)
                && v.pt_type.is_none() =>
        {
            Some(v.uuid.clone().unwrap_or_else(|| "unknown".to_string()))
        }
        _ => None,
    }
}

/// A GPT shows up as primary header, backup header and protective MBR: one table.
fn is_one_partition_table(sigs: &[Signature]) -> bool {
    sigs.iter().all(Signature::is_partition_table)
        && sigs.iter().all(|s| s.kind == "gpt" || s.kind == "PMBR")
}

fn what_is(kind: &str) -> &str {
    match kind {
        "crypto_LUKS" => "a LUKS encrypted volume",
        "LVM2_member" => "an LVM physical volume",
        "linux_raid_member" => "an md RAID member",
        "zfs_member" => "a ZFS pool member",
        "swap" => "swap space",
        "iso9660" => "an ISO 9660 image",
        "PMBR" => "a protective MBR",
        "dos" => "an MBR (dos) partition table",
        "gpt" => "a GPT header",
        _ => "",
    }
}

/// `xfs filesystem at 0x0 labelled "data"`.
fn describe(s: &Signature) -> String {
    let what = what_is(&s.kind);
    let mut text = if what.is_empty() {
        format!("{} {}", s.kind, s.usage)
    } else {
        format!("{} ({what})", s.kind)
    };
    text.push_str(&format!(" at offset {:#x}", s.offset));
    if let Some(label) = &s.label {
        text.push_str(&format!(" labelled {label:?}"));
    }
    text
}

/// Every signature, copies of one format grouped: `vfat filesystem at offsets 0x0, 0x52`.
fn describe_all(sigs: &[Signature]) -> String {
    if sigs.is_empty() {
        return "no signature found".to_string();
    }
    let mut groups: Vec<(&Signature, Vec<u64>)> = Vec::new();
    for s in sigs {
        match groups
            .iter_mut()
            .find(|(g, _)| g.kind == s.kind && g.label == s.label)
        {
            Some((_, offsets)) => offsets.push(s.offset),
            None => groups.push((s, vec![s.offset])),
        }
    }
    groups
        .iter()
        .map(|(s, offsets)| {
            let mut text = describe(s);
            if offsets.len() > 1 {
                let all: Vec<String> = offsets.iter().map(|o| format!("{o:#x}")).collect();
                text = text.replacen(
                    &format!("at offset {:#x}", s.offset),
                    &format!("at offsets {}", all.join(", ")),
                    1,
                );
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_safe(safe: &SafeProbe) -> String {
    match safe {
        SafeProbe::Nothing => "nothing".to_string(),
        SafeProbe::Ambivalent => "an ambivalent result".to_string(),
        SafeProbe::Failed(rc) => format!("an error ({rc})"),
        SafeProbe::Found(v) => {
            let mut parts = Vec::new();
            if let Some(t) = &v.fs_type {
                parts.push(t.clone());
            }
            if let Some(t) = &v.pt_type {
                parts.push(format!("{t} partition table"));
            }
            if let Some(l) = &v.label {
                parts.push(format!("labelled {l:?}"));
            }
            parts.join(" ")
        }
    }
}

pub(crate) fn human_size(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::blkid::{SafeValues, PARTITION_TABLE};
    use super::*;
    use std::path::PathBuf;

    fn opts() -> InspectOptions {
        InspectOptions {
            purpose: super::super::Purpose::LonghornData,
            label: "longhorn".into(),
            min_size_gib: 1,
            mount_point: PathBuf::from("/var/lib/longhorn"),
        }
    }

    fn blank() -> ProbeReport {
        ProbeReport {
            size_bytes: 4 * GIB,
            whole_disk: true,
            holds_root: false,
            in_use: vec![],
            mounted_at_target: false,
            target_taken_by: None,
            safe: SafeProbe::Nothing,
            signatures: vec![],
            nonzero_head: false,
            nonzero_tail: false,
            ext4_bytes: None,
            interrupted_format: false,
        }
    }

    fn sig(kind: &str, usage: &str, offset: u64, label: Option<&str>) -> Signature {
        Signature {
            kind: kind.into(),
            usage: usage.into(),
            offset,
            label: label.map(str::to_string),
            uuid: Some("u-1".into()),
            bad_checksum: false,
        }
    }

    fn ext4(label: &str) -> ProbeReport {
        ProbeReport {
            safe: SafeProbe::Found(SafeValues {
                fs_type: Some("ext4".into()),
                label: Some(label.into()),
                uuid: Some("u-1".into()),
                usage: Some("filesystem".into()),
                ..Default::default()
            }),
            signatures: vec![sig("ext4", "filesystem", 0x438, Some(label))],
            nonzero_head: true,
            ext4_bytes: Some(4 * GIB),
            ..blank()
        }
    }

    fn decide_kind(r: &ProbeReport) -> (DecisionKind, String) {
        let d = decide(Path::new("/dev/sdc"), r, &opts());
        (d.kind, d.reason)
    }

    #[test]
    fn blank_formats_and_any_non_zero_byte_refuses() {
        assert_eq!(decide_kind(&blank()).0, DecisionKind::Format);
        let (k, why) = decide_kind(&ProbeReport {
            nonzero_tail: true,
            ..blank()
        });
        assert_eq!(k, DecisionKind::Refuse);
        assert!(
            why.contains("last MiB") && why.contains("blkdiscard -z /dev/sdc"),
            "{why}"
        );
    }

    #[test]
    fn our_ext4_is_reused_unless_it_does_not_fit() {
        assert_eq!(decide_kind(&ext4("longhorn")).0, DecisionKind::Reuse);
        let too_big = ProbeReport {
            ext4_bytes: Some(5 * GIB),
            ..ext4("longhorn")
        };
        let (k, why) = decide_kind(&too_big);
        assert_eq!(k, DecisionKind::Refuse);
        assert!(why.contains("does not fit"), "{why}");
    }

    #[test]
    fn other_label_and_bad_checksum_refuse() {
        let (k, why) = decide_kind(&ext4("data"));
        assert_eq!(k, DecisionKind::Refuse);
        assert!(
            why.contains("\"data\"") && why.contains("e2label /dev/sdc longhorn"),
            "{why}"
        );
        let mut bad = ProbeReport {
            safe: SafeProbe::Nothing,
            ..ext4("longhorn")
        };
        bad.signatures[0].bad_checksum = true;
        let (k, why) = decide_kind(&bad);
        assert_eq!(k, DecisionKind::Refuse);
        assert!(
            why.contains("bad superblock checksum") && why.contains("e2fsck -n /dev/sdc"),
            "{why}"
        );
    }

    #[test]
    fn mounted_at_target_is_nothing_to_do_only_when_ours() {
        let mounted = ProbeReport {
            mounted_at_target: true,
            in_use: vec!["mounted at /var/lib/longhorn".into()],
            ..ext4("longhorn")
        };
        assert_eq!(decide_kind(&mounted).0, DecisionKind::Mounted);
        let foreign = ProbeReport {
            mounted_at_target: true,
            ..ext4("data")
        };
        assert_eq!(decide_kind(&foreign).0, DecisionKind::Refuse);
    }

    #[test]
    fn partition_tables_and_backup_gpt_refuse_with_wipefs_hint() {
        let gpt = ProbeReport {
            safe: SafeProbe::Found(SafeValues {
                pt_type: Some("gpt".into()),
                partitions: Some(1),
                ..Default::default()
            }),
            signatures: vec![
                sig("gpt", PARTITION_TABLE, 0x200, None),
                sig("gpt", PARTITION_TABLE, 4 * GIB - 512, None),
                sig("PMBR", PARTITION_TABLE, 0x1fe, None),
            ],
            nonzero_head: true,
            nonzero_tail: true,
            ..blank()
        };
        let (k, why) = decide_kind(&gpt);
        assert_eq!(k, DecisionKind::Refuse);
        assert!(
            why.contains("gpt partition table with 1 partition")
                && why.contains("wipefs -a /dev/sdc"),
            "{why}"
        );
        let backup = ProbeReport {
            signatures: vec![sig("gpt", PARTITION_TABLE, 4 * GIB - 512, None)],
            nonzero_head: false,
            ..gpt
        };
        let (k, why) = decide_kind(&backup);
        assert_eq!(k, DecisionKind::Refuse);
        assert!(why.contains("backup GPT"), "{why}");
    }

    #[test]
    fn ambivalent_lists_every_signature() {
        let amb = ProbeReport {
            safe: SafeProbe::Ambivalent,
            signatures: vec![
                sig("xfs", "filesystem", 0, None),
                sig("iso9660", "filesystem", 0x8001, None),
            ],
            nonzero_head: true,
            ..blank()
        };
        let (k, why) = decide_kind(&amb);
        assert_eq!(k, DecisionKind::Refuse);
        assert!(
            why.contains("ambivalent") && why.contains("xfs") && why.contains("iso9660"),
            "{why}"
        );
    }

    #[test]
    fn an_interrupted_format_of_ours_is_finished_but_nothing_else_is_touched() {
        let partial = ProbeReport {
            nonzero_head: true,
            interrupted_format: true,
            ..blank()
        };
        let (k, why) = decide_kind(&partial);
        assert_eq!(k, DecisionKind::Format);
        assert!(why.contains("interrupted"), "{why}");
        // mkfs completed, the run died before it cleared the marker: reuse, never format twice.
        let completed = ProbeReport {
            interrupted_format: true,
            ..ext4("longhorn")
        };
        let (k, why) = decide_kind(&completed);
        assert_eq!(k, DecisionKind::Reuse, "{why}");
        assert!(
            why.contains("completed before its run was interrupted"),
            "{why}"
        );
        // A superblock that does not check out yet: the unfinished format is redone.
        let mut half_superblock = completed.clone();
        half_superblock.signatures[0].bad_checksum = true;
        assert_eq!(decide_kind(&half_superblock).0, DecisionKind::Format);
        for other in [
            ext4("data"),
            ProbeReport {
                safe: SafeProbe::Ambivalent,
                ..ext4("longhorn")
            },
        ] {
            let r = ProbeReport {
                interrupted_format: true,
                ..other
            };
            assert_eq!(decide_kind(&r).0, DecisionKind::Refuse, "{r:?}");
        }
        let in_use = ProbeReport {
            in_use: vec!["active swap".into()],
            ..partial
        };
        assert_eq!(decide_kind(&in_use).0, DecisionKind::Refuse);
    }

    #[test]
    fn failed_probe_is_never_blank() {
        let failed = ProbeReport {
            safe: SafeProbe::Failed(-1),
            ..blank()
        };
        assert_eq!(decide_kind(&failed).0, DecisionKind::Refuse);
    }

    #[test]
    fn wrong_disks_refuse_before_anything_else() {
        for r in [
            ProbeReport {
                whole_disk: false,
                ..blank()
            },
            ProbeReport {
                holds_root: true,
                ..blank()
            },
            ProbeReport {
                in_use: vec!["active swap".into()],
                ..blank()
            },
            ProbeReport {
                size_bytes: GIB / 2,
                ..blank()
            },
            ProbeReport {
                target_taken_by: Some("xfs /dev/sdd".into()),
                ..blank()
            },
        ] {
            assert_eq!(decide_kind(&r).0, DecisionKind::Refuse, "{r:?}");
        }
    }
}
