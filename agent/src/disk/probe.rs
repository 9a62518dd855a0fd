//! Gathers every fact the decision needs about one block device, without writing to it.

use super::blkid;
use super::marker::FormatMarker;
use super::sysfs::{self, BlockInfo, DevNum};
use super::{InspectOptions, ProbeReport};
use crate::paths::Root;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How much of each end of the disk must be zeros for it to count as blank.
const EDGE: u64 = 1 << 20;
/// Where the primary ext4 superblock ends.
const SUPERBLOCK_END: u64 = 2048;

/// A block device, opened read-only.
struct OpenDevice {
    file: File,
}

impl OpenDevice {
    fn open(device: &Path) -> Result<OpenDevice> {
        let file = File::open(device)
            .with_context(|| format!("opening {} read-only", device.display()))?;
        Ok(OpenDevice { file })
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .with_context(|| format!("reading {len} bytes at offset {offset}"))?;
        Ok(buf)
    }

    /// True when the `len` bytes at `offset` are all zero. Read through one small reused
    /// buffer, stopping at the first non-zero chunk: two fresh MiB buffers per probe cost a
    /// first boot more CPU in page faults than anything else the agent does.
    fn is_zero_at(&self, offset: u64, len: u64) -> Result<bool> {
        let mut buf = [0u8; 64 * 1024];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64);
            let chunk = &mut buf[..n as usize];
            self.file
                .read_exact_at(chunk, offset + done)
                .with_context(|| format!("reading {n} bytes at offset {}", offset + done))?;
            if !is_zero(chunk) {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }
}

/// Everything about `device` (a resolved block device path) that the decision uses.
pub(crate) fn examine(device: &Path, opts: &InspectOptions, root: &Root) -> Result<ProbeReport> {
    let Some(devnum) = sysfs::block_devnum(device)? else {
        bail!("{} is not a block device", device.display());
    };
    let info = BlockInfo::read(devnum)
        .with_context(|| format!("reading what the kernel knows about {}", device.display()))?;
    let size = info.size_bytes;
    let mounts = sysfs::read_mountinfo()?;
    let family = info.family();
    if holds_root(&family, &mounts)? {
        // Refused for what it is; its content is not even read.
        return Ok(ProbeReport {
            size_bytes: size,
            whole_disk: info.whole_disk,
            holds_root: true,
            in_use: Vec::new(),
            mounted_at_target: false,
            target_taken_by: None,
            safe: blkid::SafeProbe::Nothing,
            signatures: Vec::new(),
            nonzero_head: false,
            nonzero_tail: false,
            ext4_bytes: None,
            interrupted_format: false,
        });
    }

    let dev = OpenDevice::open(device)?;
    let edge = EDGE.min(size);
    let zero_head = dev
        .is_zero_at(0, edge)
        .with_context(|| format!("reading the start of {}", device.display()))?;
    let zero_tail = dev
        .is_zero_at(size - edge, edge)
        .with_context(|| format!("reading the end of {}", device.display()))?;
    // The primary ext4 superblock: bytes 1024-2047.
    let head = dev
        .read_at(0, SUPERBLOCK_END.min(size))
        .with_context(|| format!("reading the superblock area of {}", device.display()))?;

    let safe = blkid::safe_probe(&dev.file)
        .with_context(|| format!("running libblkid's safe probe on {}", device.display()))?;
    let signatures = blkid::scan_signatures(&dev.file)
        .with_context(|| format!("scanning {} for signatures", device.display()))?;
    let mut signatures = signatures;
    let mut ext4_bytes = None;
    if let Some(sb) = ext4_super(&head) {
        ext4_bytes = sb.bytes;
        for sig in signatures
            .iter_mut()
            .filter(|s| s.kind == "ext4" && s.offset == 1024 + 0x38)
        {
            sig.bad_checksum |= !sb.checksum_ok;
        }
    }

    let target = mount_target(root, &opts.mount_point);
    let mut in_use = Vec::new();
    let mut mounted_at_target = false;
    for (name, entry) in sysfs::mounts_of(&family, &mounts) {
        let is_disk = name == info.name;
        if is_disk && entry.mount_point == target && entry.fs_root == Path::new("/") {
            mounted_at_target = true;
        }
        let what = if is_disk {
            String::new()
        } else {
            format!("partition {name} ")
        };
        in_use.push(format!("{what}mounted at {}", entry.mount_point.display()));
    }
    let target_taken_by = if mounted_at_target {
        None
    } else {
        let ours: Vec<&sysfs::MountEntry> = sysfs::mounts_of(&family, &mounts)
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == target && !ours.contains(m))
            .map(|m| format!("{} {}", m.fs_type, m.source))
    };
    for (name, devnum) in &family {
        for holder in sysfs::holders(*devnum)? {
            in_use.push(format!("{name} held by {holder}"));
        }
    }
    for (swap, devnum) in sysfs::active_swap()? {
        if family.iter().any(|(_, d)| *d == devnum) {
            in_use.push(format!("active swap on {swap}"));
        }
    }
    if exclusively_busy(device)? {
        in_use.push("an exclusive open fails with EBUSY".to_string());
    }

    Ok(ProbeReport {
        size_bytes: size,
        whole_disk: info.whole_disk,
        holds_root: false,
        in_use,
        mounted_at_target,
        target_taken_by,
        safe,
        signatures,
        nonzero_head: !zero_head,
        nonzero_tail: !zero_tail,
        ext4_bytes,
        interrupted_format: FormatMarker::read(root, opts.purpose)
            .is_some_and(|m| m.is_for(device, size, &opts.label)),
    })
}

/// Where the disk belongs on this host: the mount point under the root, with symlinks
/// resolved as mountinfo shows them.
pub(crate) fn mount_target(root: &Root, mount_point: &Path) -> PathBuf {
    let path = root.join(mount_point);
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// True when the kernel refuses an exclusive open: something (a mount, swap, md, dm,
/// another O_EXCL user) has claimed the device. The claim is dropped at once.
fn exclusively_busy(device: &Path) -> Result<bool> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(device)
    {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => Ok(true),
        Err(e) => Err(e).with_context(|| format!("opening {} exclusively", device.display())),
    }
}

fn holds_root(family: &[(String, DevNum)], mounts: &[sysfs::MountEntry]) -> Result<bool> {
    let roots = sysfs::root_devices(mounts).context("finding the disk that holds /")?;
    if roots.is_empty() {
        tracing::warn!("/ is not on a block device here; cannot rule out the OS disk by number (the in-use checks still apply)");
    }
    Ok(family.iter().any(|(_, d)| roots.contains(d)))
}

/// What the primary ext4 superblock (byte 1024 of `head`) says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ext4Super {
    /// Block count times block size.
    pub bytes: Option<u64>,
    /// False when metadata_csum is on and the stored checksum does not match.
    pub checksum_ok: bool,
}

/// Reads the primary ext4 superblock. The checksum is verified here because libblkid
/// only does so from util-linux 2.39 on; on older versions a damaged superblock would
/// otherwise look like a healthy filesystem.
pub(crate) fn ext4_super(head: &[u8]) -> Option<Ext4Super> {
    let sb = head.get(1024..2048)?;
    let u32_at = |off: usize| u32::from_le_bytes(sb[off..off + 4].try_into().expect("4 bytes"));
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != 0xEF53 {
        return None;
    }
    let log_block = u32_at(0x18);
    let bytes = (log_block <= 6).then(|| {
        let block_size = 1024u64 << log_block;
        let incompat_64bit = u32_at(0x60) & 0x80 != 0;
        let blocks_hi = if incompat_64bit {
            u64::from(u32_at(0x150))
        } else {
            0
        };
        ((blocks_hi << 32) | u64::from(u32_at(0x04))).checked_mul(block_size)
    });
    let metadata_csum = u32_at(0x64) & 0x400 != 0;
    // ext4 stores the raw CRC32C state (seed !0, no final inversion) of the bytes
    // before s_checksum (offset 0x3FC).
    let checksum_ok = !metadata_csum || crc32c_raw(!0, &sb[..0x3FC]) == u32_at(0x3FC);
    Some(Ext4Super {
        bytes: bytes.flatten(),
        checksum_ok,
    })
}

/// True when every byte is zero; a word at a time, as a byte loop over the edge MiBs of a
/// first boot's three probes showed in its CPU time (docs/benchmarks.md).
fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    let words_zero = words
        .by_ref()
        .all(|w| u64::from_ne_bytes(w.try_into().expect("chunks of 8")) == 0);
    words_zero && words.remainder().iter().all(|b| *b == 0)
}

/// CRC32C (Castagnoli) update without the final inversion, as ext4 and libblkid use it.
fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        head[1024 + 0x18..1024 + 0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        head[1024 + 0x04..1024 + 0x08].copy_from_slice(&262_144u32.to_le_bytes());
        head
    }

    #[test]
    fn ext4_size_reads_block_count_and_size() {
        let mut head = superblock();
        assert_eq!(ext4_super(&head).unwrap().bytes, Some(1 << 30));
        head[1024 + 0x60..1024 + 0x64].copy_from_slice(&0x80u32.to_le_bytes());
        head[1024 + 0x150..1024 + 0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            ext4_super(&head).unwrap().bytes,
            Some(((1u64 << 32) + 262_144) * 4096)
        );
        head[1024 + 0x38] = 0;
        assert_eq!(ext4_super(&head), None);
    }

    #[test]
    fn is_zero_sees_any_non_zero_byte() {
        assert!(is_zero(&[]));
        for len in [1, 7, 8, 9, 4096 + 5] {
            let zeros = vec![0u8; len];
            assert!(is_zero(&zeros), "{len} zeros");
            for at in [0, len / 2, len - 1] {
                let mut data = zeros.clone();
                data[at] = 0x01;
                assert!(!is_zero(&data), "a byte set at {at} of {len}");
            }
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C("123456789") is 0xE3069283 with the final inversion.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn ext4_checksum_is_verified_only_with_metadata_csum() {
        let mut head = superblock();
        assert!(
            ext4_super(&head).unwrap().checksum_ok,
            "no metadata_csum: nothing to verify"
        );
        head[1024 + 0x64..1024 + 0x68].copy_from_slice(&0x400u32.to_le_bytes());
        let sum = crc32c_raw(!0, &head[1024..1024 + 0x3FC]);
        head[1024 + 0x3FC..1024 + 0x400].copy_from_slice(&sum.to_le_bytes());
        assert!(ext4_super(&head).unwrap().checksum_ok);
        head[1024 + 0x78] ^= 1;
        assert!(!ext4_super(&head).unwrap().checksum_ok);
    }
}
