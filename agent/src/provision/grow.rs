//! Growing the root filesystem to its disk: an Azure OS disk may be larger than the image
//! it was created from, and nothing else uses the space after the root partition.
//!
//! The way: `sfdisk -N` moves the end of the root partition to the end of the disk (it also
//! moves GPT's backup header to the disk's new end), `partx --update` tells the kernel the
//! partition's new size (BLKPG, which works while the partition is mounted, where a full
//! re-read would be refused), and `resize2fs` grows the mounted ext4 online. sfdisk and
//! partx are util-linux (Debian's `fdisk` and `util-linux`), resize2fs is e2fsprogs: all
//! in every Debian image, where `growpart` (cloud-guest-utils) goes with cloud-init and is
//! itself a shell script around these same sfdisk and partx calls.
//!
//! Only the filesystem mounted at the root (`/`, or `--root DIR` when that is a mount point)
//! is considered, only when it is an ext4 on a plain partition (no LVM, no md), and only
//! when that partition is the last one on its disk: no other disk or partition is touched.

use super::run;
use crate::disk::sysfs;
use crate::paths::Root;
use crate::subprocess::Program;
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Space after the root partition (or filesystem) below this is left alone: partition
/// alignment (1 MiB) and GPT's backup table account for such a gap after a grow.
pub const MIN_GROWTH_BYTES: u64 = 4 << 20;

/// The root filesystem's partition and disk, as the kernel sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPartition {
    /// Device nodes (`/dev/NAME` under the root).
    pub disk_dev: PathBuf,
    pub part_dev: PathBuf,
    /// The partition's number on its disk (sfdisk's `-N`).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    pub disk_bytes: u64,
    /// No partition of the disk starts after this one.
    pub last: bool,
    pub fs_type: String,
    /// The filesystem's own size (ext4's superblock), when it could be read.
    pub fs_bytes: Option<u64>,
}

/// What the root filesystem needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grow {
    /// The partition first (the filesystem follows on the next decision).
    Partition,
    Filesystem,
}

/// Why nothing is grown, when the root is not something this module grows.
pub type Note = String;

/// The root filesystem's partition: `Err(note)` when there is none this module may grow.
pub fn observe(root: &Root) -> Result<std::result::Result<RootPartition, Note>> {
    let mounts = sysfs::read_mountinfo()?;
    let dir = fs::canonicalize(root.dir())
        .with_context(|| format!("resolving {}", root.dir().display()))?;
    let Some(mount) = mounts.iter().rev().find(|m| m.mount_point == dir) else {
        return Ok(Err(format!(
            "{} is not a mount point: no root filesystem to grow",
            dir.display()
        )));
    };
    let Some(devnum) = mount.devnum.filter(|d| d.major() != 0) else {
        return Ok(Err(format!(
            "the root filesystem ({}) is not on a block device",
            mount.fs_type
        )));
    };
    let part_dir = fs::canonicalize(devnum.sysfs_dir())
        .with_context(|| format!("resolving {}", devnum.sysfs_dir().display()))?;
    let Some(number) = read_number(&part_dir.join("partition"))? else {
        return Ok(Err(format!(
            "the root filesystem is on {}, not on a partition (LVM, md or a whole disk): not grown",
            name(&part_dir)
        )));
    };
    let disk_dir = part_dir
        .parent()
        .with_context(|| format!("{} has no parent disk", part_dir.display()))?;
    let start = read_number(&part_dir.join("start"))?.context("partition without a start")?;
    let size = read_number(&part_dir.join("size"))?.context("partition without a size")?;
    let disk_size = read_number(&disk_dir.join("size"))?.context("disk without a size")?;
    let disk_devnum = sysfs::read_devnum(disk_dir)?
        .with_context(|| format!("{} has no device number", disk_dir.display()))?;
    let disk = sysfs::BlockInfo::read(disk_devnum)?;
    let mut last = true;
    for (other, _) in disk
        .partitions
        .iter()
        .filter(|(n, _)| *n != name(&part_dir))
    {
        if read_number(&disk_dir.join(other).join("start"))?.unwrap_or(0) > start {
            last = false;
        }
    }
    let part_dev = root.join("/dev").join(name(&part_dir));
    // The unit's DeviceAllow= admits the disks Azure gives (SCSI `sd`, NVMe `blkext`); an OS
    // disk of another kind (virtio-blk under KVM, e.g. the image bake's test boot) cannot be
    // opened, and is a root filesystem this agent does not grow, not a failed node.
    if mount.fs_type == "ext4" {
        if let Err(e) = fs::File::open(&part_dev) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Ok(Err(format!(
                    "{} cannot be opened ({e}): the unit admits SCSI and NVMe disks only, so this root filesystem is not grown",
                    part_dev.display()
                )));
            }
        }
    }
    let fs_bytes = if mount.fs_type == "ext4" {
        Some(ext4_size(&part_dev)?)
    } else {
        None
    };
    Ok(Ok(RootPartition {
        disk_dev: root.join("/dev").join(&disk.name),
        part_dev,
        number: u32::try_from(number).context("partition number out of range")?,
        // sysfs counts 512-byte sectors whatever the device's sector size.
        start_bytes: start * 512,
        size_bytes: size * 512,
        disk_bytes: disk_size * 512,
        last,
        fs_type: mount.fs_type.clone(),
        fs_bytes,
    }))
}

/// What `part` needs, or why nothing is done.
pub fn decide(part: &RootPartition) -> std::result::Result<Option<Grow>, Note> {
    let unused = part
        .disk_bytes
        .saturating_sub(part.start_bytes + part.size_bytes);
    if unused >= MIN_GROWTH_BYTES {
        if !part.last {
            return Err(format!(
                "{} is not the last partition of {}: not grown",
                part.part_dev.display(),
                part.disk_dev.display()
            ));
        }
        if part.fs_type != "ext4" {
            return Err(format!(
                "the root filesystem is {}, only ext4 is grown",
                part.fs_type
            ));
        }
        return Ok(Some(Grow::Partition));
    }
    match part.fs_bytes {
        Some(fs) if part.size_bytes.saturating_sub(fs) >= MIN_GROWTH_BYTES => {
            Ok(Some(Grow::Filesystem))
        }
        _ => Ok(None),
    }
}

/// Does `grow` to `part`.
pub fn apply(part: &RootPartition, grow: Grow) -> Result<()> {
    match grow {
        Grow::Partition => {
            let n = part.number.to_string();
            // ", +": keep the start, end at the last usable sector.
            run(
                Program::new("sfdisk")
                    .args(["--quiet", "--no-reread", "--no-tell-kernel", "-N", &n])
                    .arg(&part.disk_dev)
                    .input(", +\n"),
                "sfdisk (growing the root partition)",
            )?;
            run(
                Program::new("partx")
                    .args(["--update", "--nr", &n])
                    .arg(&part.disk_dev),
                "partx (telling the kernel the root partition's new size)",
            )
        }
        Grow::Filesystem => run(
            Program::new("resize2fs").arg(&part.part_dev),
            "resize2fs (growing the root filesystem online)",
        ),
    }
}

/// The size of the ext4 filesystem on `dev`, from its superblock (ext4's on-disk layout:
/// the superblock at byte 1024; `s_blocks_count_lo` at 0x4, `s_log_block_size` at 0x18,
/// `s_magic` 0xEF53 at 0x38, `s_feature_incompat` at 0x60 with INCOMPAT_64BIT 0x80, and
/// `s_blocks_count_hi` at 0x150).
pub fn ext4_size(dev: &Path) -> Result<u64> {
    let file = fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut sb = [0u8; 1024];
    file.read_exact_at(&mut sb, 1024)
        .with_context(|| format!("reading the superblock of {}", dev.display()))?;
    ext4_size_from_superblock(&sb).with_context(|| format!("{} holds no ext4", dev.display()))
}

pub fn ext4_size_from_superblock(sb: &[u8; 1024]) -> Option<u64> {
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let mut blocks = u64::from(u32_at(0x4));
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    let block_size = 1024u64.checked_shl(u32_at(0x18))?;
    blocks.checked_mul(block_size)
}

fn name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_number(path: &Path) -> Result<Option<u64>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            text.trim()
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn part(size: u64, disk: u64, fs: u64) -> RootPartition {
        RootPartition {
            disk_dev: "/dev/sda".into(),
            part_dev: "/dev/sda1".into(),
            number: 1,
            start_bytes: MIB,
            size_bytes: size,
            disk_bytes: disk,
            last: true,
            fs_type: "ext4".into(),
            fs_bytes: Some(fs),
        }
    }

    #[test]
    fn grows_the_partition_then_the_filesystem_then_nothing() {
        let gib = 1024 * MIB;
        assert_eq!(
            decide(&part(2 * gib, 30 * gib, 2 * gib)),
            Ok(Some(Grow::Partition))
        );
        assert_eq!(
            decide(&part(30 * gib - 2 * MIB, 30 * gib, 2 * gib)),
            Ok(Some(Grow::Filesystem))
        );
        assert_eq!(
            decide(&part(30 * gib - 2 * MIB, 30 * gib, 30 * gib - 2 * MIB)),
            Ok(None)
        );
        // An image as large as its disk, with GPT's backup table after the partition.
        assert_eq!(
            decide(&part(2 * gib - 2 * MIB, 2 * gib, 2 * gib - 2 * MIB)),
            Ok(None)
        );
    }

    #[test]
    fn refuses_what_it_must_not_grow() {
        let gib = 1024 * MIB;
        let mut not_last = part(2 * gib, 30 * gib, 2 * gib);
        not_last.last = false;
        assert!(decide(&not_last)
            .unwrap_err()
            .contains("not the last partition"));
        let mut xfs = part(2 * gib, 30 * gib, 2 * gib);
        xfs.fs_type = "xfs".into();
        xfs.fs_bytes = None;
        assert!(decide(&xfs).unwrap_err().contains("only ext4"));
    }

    #[test]
    fn reads_the_size_from_an_ext4_superblock() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&1000u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_size_from_superblock(&sb), Some(1000 * 4096));
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            ext4_size_from_superblock(&sb),
            Some(((1u64 << 32) + 1000) * 4096)
        );
        sb[0x38] = 0;
        assert_eq!(ext4_size_from_superblock(&sb), None);
    }
}
