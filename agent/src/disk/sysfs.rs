//! What the kernel says about a block device: sysfs (whole disk or partition, its
//! partitions and holders), mountinfo, active swap, and whether it holds `/`.
//!
//! These are host facts, read from the real /sys and /proc even in a `--root` sandbox:
//! the device itself is a real one.

use anyhow::{Context, Result};
use nix::sys::stat::{major, minor, stat, SFlag};
use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A block device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum(pub u64);

impl DevNum {
    pub fn major(self) -> u64 {
        major(self.0)
    }
    pub fn minor(self) -> u64 {
        minor(self.0)
    }

    /// `/sys/dev/block/MAJ:MIN`, the device's sysfs directory.
    pub fn sysfs_dir(self) -> PathBuf {
        PathBuf::from(format!("/sys/dev/block/{}:{}", self.major(), self.minor()))
    }

    fn parse(text: &str) -> Option<DevNum> {
        let (maj, min) = text.trim().split_once(':')?;
        Some(DevNum(nix::sys::stat::makedev(
            maj.parse().ok()?,
            min.parse().ok()?,
        )))
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())
    }
}

/// The device number of a block special file, or None when `path` is something else.
pub fn block_devnum(path: &Path) -> Result<Option<DevNum>> {
    let st = stat(path).with_context(|| format!("reading the status of {}", path.display()))?;
    let is_block = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFBLK;
    Ok(is_block.then_some(DevNum(st.st_rdev)))
}

/// A block device as sysfs sees it.
#[derive(Debug, Clone)]
pub struct BlockInfo {
    pub devnum: DevNum,
    /// Kernel name, e.g. `sdc`, `loop3`, `nvme0n2`.
    pub name: String,
    /// `DEVTYPE=disk` and no `partition` attribute.
    pub whole_disk: bool,
    /// Its partitions (kernel name, device number).
    pub partitions: Vec<(String, DevNum)>,
    /// From the `size` attribute, which counts 512-byte sectors whatever the device's.
    pub size_bytes: u64,
}

impl BlockInfo {
    pub fn read(devnum: DevNum) -> Result<BlockInfo> {
        let dir = devnum.sysfs_dir();
        let real = fs::canonicalize(&dir)
            .with_context(|| format!("resolving {} (is sysfs mounted?)", dir.display()))?;
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no name", real.display()))?;
        let devtype = read_uevent_key(&real, "DEVTYPE")?;
        let whole_disk = devtype.as_deref() == Some("disk") && !real.join("partition").exists();
        let mut partitions = Vec::new();
        for entry in fs::read_dir(&real).with_context(|| format!("listing {}", real.display()))? {
            let entry = entry.with_context(|| format!("listing {}", real.display()))?;
            let path = entry.path();
            if !path.join("partition").exists() {
                continue;
            }
            if let Some(dev) = read_devnum(&path)? {
                partitions.push((entry.file_name().to_string_lossy().into_owned(), dev));
            }
        }
        partitions.sort();
        let size_path = real.join("size");
        let sectors: u64 = fs::read_to_string(&size_path)
            .with_context(|| format!("reading {}", size_path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", size_path.display()))?;
        Ok(BlockInfo {
            devnum,
            name,
            whole_disk,
            partitions,
            size_bytes: sectors.saturating_mul(512),
        })
    }

    /// The disk and its partitions: every device number whose use makes the disk busy.
    pub fn family(&self) -> Vec<(String, DevNum)> {
        let mut all = vec![(self.name.clone(), self.devnum)];
        all.extend(self.partitions.iter().cloned());
        all
    }
}

fn read_uevent_key(dir: &Path, key: &str) -> Result<Option<String>> {
    let path = dir.join("uevent");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string))
}

/// The device number in `dir/dev` (a sysfs block device directory); `None` without one.
pub(crate) fn read_devnum(dir: &Path) -> Result<Option<DevNum>> {
    let path = dir.join("dev");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(DevNum::parse(&text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Kernel names of the devices stacked on top of `devnum` (dm, md, bcache...).
pub fn holders(devnum: DevNum) -> Result<Vec<String>> {
    let dir = devnum.sysfs_dir().join("holders");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub devnum: Option<DevNum>,
    /// The directory of the filesystem that is mounted (`/` unless a bind mount).
    pub fs_root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

pub fn read_mountinfo() -> Result<Vec<MountEntry>> {
    let path = "/proc/self/mountinfo";
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(parse_mountinfo(&text))
}

/// Parses mountinfo (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            if left.len() < 6 {
                return None;
            }
            Some(MountEntry {
                devnum: DevNum::parse(left[2]),
                fs_root: PathBuf::from(unescape_octal(left[3])),
                mount_point: PathBuf::from(unescape_octal(left[4])),
                fs_type: right.next()?.to_string(),
                source: unescape_octal(right.next().unwrap_or("")),
            })
        })
        .collect()
}

/// Undoes the kernel's `\ooo` escaping of spaces, tabs, newlines and backslashes.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\' && i + 3 < bytes.len())
            .then(|| &bytes[i + 1..i + 4])
            .filter(|digits| digits.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0')))
            .and_then(|code| u8::try_from(code).ok());
        if let Some(code) = octal {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device a mount belongs to: its mountinfo device number, or (for filesystems
/// such as btrfs that report an anonymous one) the block device named as its source.
fn mount_devnums(entry: &MountEntry) -> Vec<DevNum> {
    let mut devs: Vec<DevNum> = entry.devnum.into_iter().collect();
    if entry.source.starts_with('/') {
        if let Ok(Some(dev)) = block_devnum(Path::new(&entry.source)) {
            devs.push(dev);
        }
    }
    devs
}

/// Mounts of any device in `family`, each with the member's name.
pub fn mounts_of<'m>(
    family: &[(String, DevNum)],
    mounts: &'m [MountEntry],
) -> Vec<(String, &'m MountEntry)> {
    let mut found = Vec::new();
    for entry in mounts {
        let devs = mount_devnums(entry);
        if let Some((name, _)) = family.iter().find(|(_, dev)| devs.contains(dev)) {
            found.push((name.clone(), entry));
        }
    }
    found
}

/// Block devices in use as swap (from /proc/swaps).
pub fn active_swap() -> Result<Vec<(String, DevNum)>> {
    let path = "/proc/swaps";
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut found = Vec::new();
    for name in parse_swaps(&text) {
        // Swap files live on a mounted filesystem, which the mount check already sees.
        if let Ok(Some(dev)) = block_devnum(Path::new(&name)) {
            found.push((name, dev));
        }
    }
    Ok(found)
}

fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape_octal)
        .collect()
}

/// The whole disks (and partitions, and the devices under any device-mapper or md layer)
/// that hold the host's `/`. Empty when `/` is not on a block device (a container's
/// overlay): the in-use checks still catch a disk with a mounted partition.
pub fn root_devices(mounts: &[MountEntry]) -> Result<BTreeSet<DevNum>> {
    let mut start: Vec<DevNum> = Vec::new();
    let st = stat("/").context("reading the status of /")?;
    start.push(DevNum(st.st_dev));
    if let Some(root) = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/"))
    {
        start.extend(mount_devnums(root));
    }
    let mut seen = BTreeSet::new();
    while let Some(dev) = start.pop() {
        if !dev.sysfs_dir().exists() || !seen.insert(dev) {
            continue;
        }
        let real = fs::canonicalize(dev.sysfs_dir())
            .with_context(|| format!("resolving {}", dev.sysfs_dir().display()))?;
        if real.join("partition").exists() {
            if let Some(parent) = real.parent().map(read_devnum).transpose()?.flatten() {
                start.push(parent);
            }
        }
        let slaves = real.join("slaves");
        if let Ok(entries) = fs::read_dir(&slaves) {
            for entry in entries.flatten() {
                if let Some(slave) = read_devnum(&entry.path())? {
                    start.push(slave);
                }
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 27 7:3 / /var/lib/longhorn rw,relatime shared:40 - ext4 /dev/loop3 rw
91 27 7:3 /sub /mnt/with\\040space rw,relatime - ext4 /dev/loop3 rw
92 27 0:55 / /srv rw - btrfs /dev/loop4 rw,space_cache=v2
";

    #[test]
    fn mountinfo_fields_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].mount_point, PathBuf::from("/"));
        assert_eq!(m[1].devnum.map(|d| (d.major(), d.minor())), Some((254, 0)));
        assert_eq!(m[2].fs_type, "ext4");
        assert_eq!(m[2].source, "/dev/loop3");
        assert_eq!(m[3].fs_root, PathBuf::from("/sub"));
        assert_eq!(m[3].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[4].devnum.map(|d| d.major()), Some(0));
    }

    #[test]
    fn mounts_are_matched_by_device_number() {
        let m = parse_mountinfo(MOUNTINFO);
        let loop3 = DevNum(nix::sys::stat::makedev(7, 3));
        let family = vec![("loop3".to_string(), loop3)];
        let hits = mounts_of(&family, &m);
        let points: Vec<_> = hits.iter().map(|(_, e)| e.mount_point.clone()).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/var/lib/longhorn"),
                PathBuf::from("/mnt/with space")
            ]
        );
    }

    #[test]
    fn swaps_list_device_names() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/sdb2 partition 1048572 0 -2\n/swap\\040file file 10 0 -3\n";
        assert_eq!(
            parse_swaps(text),
            vec!["/dev/sdb2".to_string(), "/swap file".to_string()]
        );
    }

    #[test]
    fn devnum_text_round_trips() {
        let d = DevNum::parse("259:7\n").unwrap();
        assert_eq!(d.to_string(), "259:7");
        assert_eq!(d.sysfs_dir(), PathBuf::from("/sys/dev/block/259:7"));
        assert!(DevNum::parse("nonsense").is_none());
    }
}
