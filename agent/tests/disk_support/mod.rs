//! Real loop devices for the disk tests, cleaned up even when a test fails.
//!
//! A [`Lab`] owns a temp directory (disk images and sandbox roots). Dropping it (also
//! while unwinding from a failed assertion) unmounts everything under it, turns off
//! swap it enabled and detaches its loop devices, in that order, before the directory
//! is deleted.

#![allow(dead_code)] // each test binary uses its own part of the lab

use canarie_agent::config::DataDiskConfig;
use canarie_agent::disk::{self, DecisionKind, DiskObservation, DiskOutcome, Refused};
use canarie_agent::paths::Root;
use nix::unistd::{lseek, Whence};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub const GIB: u64 = 1 << 30;
pub const LABEL: &str = "longhorn";
pub const MOUNT_POINT: &str = "/var/lib/longhorn";

/// The tests attach loop devices and mount filesystems: they need root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists(),
        "the disk tests need root and loop devices (/dev/loop-control); run them as root (CI does)"
    );
}

/// Runs a shell command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the shell command `cmd` with each `{}` replaced by `path`, quoted; its stdout.
pub fn sh_on(cmd: &str, path: &Path) -> String {
    sh(&cmd.replace("{}", &format!("'{}'", path.display())))
}

/// A `prepare` for [`Lab::node_with`] and [`Lab::disk`]: the shell command `cmd` on the
/// image (`{}`, as in [`sh_on`]).
pub fn shell(cmd: &str) -> impl FnOnce(&Path) + '_ {
    move |image| {
        sh_on(cmd, image);
    }
}

/// Our filesystem on `image`: ext4 with our label, as a first run leaves the disk.
pub fn mkfs_ours(image: &Path) {
    sh_on(&format!("mkfs.ext4 -q -F -L {LABEL} {{}}"), image);
}

/// losetup -f picks the first free device; two callers at once could pick the same one.
static LOSETUP: Mutex<()> = Mutex::new(());

pub struct Lab {
    dir: tempfile::TempDir,
    loops: Vec<PathBuf>,
    swaps: Vec<PathBuf>,
}

impl Lab {
    pub fn new() -> Lab {
        require_root();
        Lab {
            dir: tempfile::Builder::new()
                .prefix("canarie-disk-")
                .tempdir()
                .expect("temp dir"),
            loops: Vec::new(),
            swaps: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A sparse image file of `size` bytes.
    pub fn image(&self, name: &str, size: u64) -> PathBuf {
        let path = self.path(name);
        File::create(&path)
            .and_then(|f| f.set_len(size))
            .expect("create image");
        path
    }

    /// Attaches `image` to a free loop device.
    pub fn attach(&mut self, image: &Path) -> PathBuf {
        self.attach_with(image, "")
    }

    /// Attaches `image` read-write with extra losetup options (e.g. `--offset N`).
    pub fn attach_with(&mut self, image: &Path, options: &str) -> PathBuf {
        let _guard = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let dev = sh(&format!(
            "losetup -f --show {options} '{}'",
            image.display()
        ));
        let dev = PathBuf::from(dev.trim());
        self.loops.push(dev.clone());
        dev
    }

    /// A fresh sandbox root (the agent's `--root`), e.g. for a rebuilt VM.
    pub fn root(&self, name: &str) -> Root {
        let dir = self.path(name);
        fs::create_dir_all(&dir).expect("create root");
        Root::new(dir)
    }

    /// Makes the LUN link of one udev scheme point at `device`, as udev would.
    pub fn link_lun(root: &Root, scheme: LinkScheme, lun: u8, device: &Path) -> PathBuf {
        let link = match scheme {
            LinkScheme::ByLun => root.join(format!("/dev/disk/azure/data/by-lun/{lun}")),
            LinkScheme::Scsi1 => root.join(format!("/dev/disk/azure/scsi1/lun{lun}")),
        };
        fs::create_dir_all(link.parent().unwrap()).expect("create link dir");
        std::os::unix::fs::symlink(device, &link).expect("create LUN link");
        link
    }

    /// Turns on swap on `device` (turned off again on drop).
    pub fn swapon(&mut self, device: &Path) {
        sh(&format!("swapon '{}'", device.display()));
        self.swaps.push(device.to_path_buf());
    }

    /// Mounts `device` at a directory of the lab (unmounted on drop).
    pub fn mount(&self, device: &Path, dir: &str, options: &str) -> PathBuf {
        let target = self.path(dir);
        fs::create_dir_all(&target).expect("create mount dir");
        sh(&format!(
            "mount -o '{options}' '{}' '{}'",
            device.display(),
            target.display()
        ));
        target
    }

    /// Mount points under the lab, deepest first.
    fn mounts_under(&self) -> Vec<PathBuf> {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut found: Vec<PathBuf> = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(self.dir.path()))
            .collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        found
    }

    pub fn is_mounted(&self, target: &Path) -> bool {
        self.mounts_under().iter().any(|p| p == target)
    }

    pub fn unmount(&self, target: &Path) {
        sh(&format!("umount '{}'", target.display()));
    }
}

/// One node's view of its data disk, ready for the disk step: an image on a loop device,
/// linked as LUN 0 (azure-vm-utils' by-lun scheme) in a fresh sandbox root, and the config
/// that finds it there. It owns its lab, so dropping it cleans everything up.
pub struct Node {
    pub image: PathBuf,
    pub dev: PathBuf,
    pub root: Root,
    /// The LUN link inside `root`.
    pub link: PathBuf,
    pub cfg: DataDiskConfig,
    pub lab: Lab,
}

impl Lab {
    /// A new lab holding one node whose data disk is `size` bytes of zeros.
    pub fn node(size: u64) -> Node {
        Lab::node_with(size, |_| {})
    }

    /// A new lab holding one node whose data disk `prepare` gives its starting state
    /// (mkfs, dd, a written superblock…) before it is attached.
    pub fn node_with(size: u64, prepare: impl FnOnce(&Path)) -> Node {
        let mut lab = Lab::new();
        let (image, dev) = lab.disk("disk.img", size, prepare);
        let root = lab.root("root");
        let link = Lab::link_lun(&root, LinkScheme::ByLun, 0, &dev);
        Node {
            image,
            dev,
            root,
            link,
            cfg: config(0),
            lab,
        }
    }

    /// A sparse image of `size` bytes that `prepare` writes, then attached to a loop device:
    /// (image, device).
    pub fn disk(
        &mut self,
        name: &str,
        size: u64,
        prepare: impl FnOnce(&Path),
    ) -> (PathBuf, PathBuf) {
        let image = self.image(name, size);
        prepare(&image);
        let dev = self.attach(&image);
        (image, dev)
    }
}

impl Node {
    /// The disk step's observation with the node's config; panics if it cannot observe.
    pub fn observe(&self) -> DiskObservation {
        disk::observe(&self.cfg, &self.root).expect("observe the node's disk")
    }

    /// Observes, and checks that the decision is `kind`.
    pub fn observe_expecting(&self, kind: DecisionKind) -> DiskObservation {
        let obs = self.observe();
        assert_eq!(obs.decision.kind, kind, "{:?}", obs.decision);
        obs
    }

    /// The disk step's apply with the node's config.
    pub fn apply(&self, obs: &DiskObservation) -> anyhow::Result<DiskOutcome> {
        disk::apply(obs, &self.cfg, &self.root, &disk::Mounter::Syscall)
    }

    /// Observes and applies, which must succeed.
    pub fn converge(&self) -> DiskOutcome {
        self.apply(&self.observe()).expect("apply")
    }

    /// The data disk's mount point inside the node's root.
    pub fn mount_point(&self) -> PathBuf {
        self.root.join(MOUNT_POINT)
    }

    /// [`assert_refused_untouched`] with the node's image, config and root.
    pub fn assert_refused(&self) -> (DiskObservation, String) {
        assert_refused_untouched(&self.image, &self.cfg, &self.root)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Best effort and quiet: a failed test must still leave no loop device behind.
        for target in self.mounts_under() {
            let ok = Command::new("umount")
                .arg(&target)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&target).status();
            }
        }
        for dev in self.swaps.drain(..) {
            let _ = Command::new("swapoff").arg(&dev).status();
        }
        for dev in self.loops.drain(..).rev() {
            // Partitions added with partx outlive a detach of a loop device without
            // partscan; the next test to get the device must not find them.
            let _ = Command::new("partx")
                .arg("--delete")
                .arg(&dev)
                .stderr(std::process::Stdio::null())
                .status();
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum LinkScheme {
    ByLun,
    Scsi1,
}

/// The data-disk config the tests use: LUN discovery, no waiting.
pub fn config(lun: u8) -> DataDiskConfig {
    DataDiskConfig {
        lun,
        device: None,
        mount_point: PathBuf::from(MOUNT_POINT),
        label: LABEL.to_string(),
        min_size_gib: 1,
        wait_seconds: 0,
    }
}

/// A digest of an image's content, equal for equal bytes however sparse the file is:
/// every non-zero 64 KiB chunk with its offset, and the length. Holes (found with
/// SEEK_DATA/SEEK_HOLE) are zeros and skipped, so a 1 GiB image hashes in milliseconds.
pub fn content_digest(path: &Path) -> String {
    const CHUNK: u64 = 64 << 10;
    let file = File::open(path).expect("open image");
    let len = file.metadata().expect("image metadata").len();
    let zeros = vec![0u8; CHUNK as usize];
    let mut buf = vec![0u8; CHUNK as usize];
    let mut hasher = Sha256::new();
    hasher.update(len.to_le_bytes());
    let mut next_chunk = 0u64; // first chunk index not yet hashed
    let mut pos = 0i64;
    while (pos as u64) < len {
        let Ok(data) = lseek(&file, pos, Whence::SeekData) else {
            break;
        };
        let hole = lseek(&file, data, Whence::SeekHole).expect("SEEK_HOLE");
        let first = (data as u64 / CHUNK).max(next_chunk);
        let last = (hole as u64).div_ceil(CHUNK);
        for chunk in first..last {
            let offset = chunk * CHUNK;
            let n = CHUNK.min(len - offset) as usize;
            file.read_exact_at(&mut buf[..n], offset)
                .expect("read image");
            if buf[..n] != zeros[..n] {
                hasher.update(offset.to_le_bytes());
                hasher.update(&buf[..n]);
            }
        }
        next_chunk = last;
        pos = hole;
    }
    hex::encode(hasher.finalize())
}

/// Writes `bytes` into an image at `offset`.
pub fn poke(image: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(image)
        .expect("open image");
    f.write_all_at(bytes, offset).expect("write image");
    f.sync_all().expect("sync image");
}

/// Flips the low bit of one byte of an image.
pub fn flip(image: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .expect("open image");
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).expect("read image");
    f.write_all_at(&[b[0] ^ 1], offset).expect("write image");
    f.sync_all().expect("sync image");
}

/// An md v1.2 superblock at 4 KiB, as `mdadm --create --metadata=1.2` writes it (the
/// kernel here has no md, so mdadm cannot); libblkid checks magic, version, offset
/// and, in newer versions, the checksum.
pub fn write_md_superblock(image: &Path) {
    let mut sb = vec![0u8; 256 + 2];
    sb[0..4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes()); // magic
    sb[4..8].copy_from_slice(&1u32.to_le_bytes()); // major_version
    sb[16..32].copy_from_slice(&[0x5a; 16]); // set_uuid
    sb[32..40].copy_from_slice(b"canarie0"); // set_name
    sb[72..76].copy_from_slice(&1u32.to_le_bytes()); // level: raid1
    sb[92..96].copy_from_slice(&2u32.to_le_bytes()); // raid_disks
    sb[128..136].copy_from_slice(&2048u64.to_le_bytes()); // data_offset (sectors)
    sb[144..152].copy_from_slice(&8u64.to_le_bytes()); // super_offset: 4 KiB in sectors
    sb[168..184].copy_from_slice(&[0xa5; 16]); // device_uuid
    sb[220..224].copy_from_slice(&1u32.to_le_bytes()); // max_dev
                                                       // sb_csum (offset 216): 32-bit sum of the little-endian words of the superblock
                                                       // and dev_roles, folded once, computed with the field itself zero.
    let mut sum: u64 = 0;
    for word in sb[..256].chunks_exact(4) {
        sum += u64::from(u32::from_le_bytes(word.try_into().unwrap()));
    }
    sum += u64::from(u16::from_le_bytes([sb[256], sb[257]]));
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    sb[216..220].copy_from_slice(&csum.to_le_bytes());
    poke(image, 4096, &sb);
}

/// A ZFS vdev label's uberblock ring with four valid uberblocks (libblkid wants four),
/// as `zpool create` would leave them; the kernel here has no ZFS.
pub fn write_zfs_uberblocks(image: &Path) {
    for i in 0..4u64 {
        let mut ub = vec![0u8; 40];
        ub[0..8].copy_from_slice(&0x00ba_b10cu64.to_le_bytes()); // ub_magic
        ub[8..16].copy_from_slice(&5000u64.to_le_bytes()); // ub_version
        ub[16..24].copy_from_slice(&(i + 1).to_le_bytes()); // ub_txg
        poke(image, 128 * 1024 + i * 1024, &ub);
    }
}

/// Observes with `cfg`, expects a refusal, runs the apply step too, and checks that the
/// whole image is byte-for-byte what it was and that nothing was written to the root.
/// Returns the reason.
pub fn assert_refused_untouched(
    image: &Path,
    cfg: &DataDiskConfig,
    root: &Root,
) -> (DiskObservation, String) {
    let before = content_digest(image);
    let obs = disk::observe(cfg, root).expect("observe");
    assert_eq!(
        obs.decision.kind,
        DecisionKind::Refuse,
        "expected a refusal, got {:?}",
        obs.decision
    );
    let err = disk::apply(&obs, cfg, root, &disk::Mounter::Syscall).expect_err("apply must refuse");
    let refused = err
        .downcast_ref::<Refused>()
        .unwrap_or_else(|| panic!("not a refusal: {err:#}"));
    assert_eq!(refused.device, obs.device);
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("refusing {}: ", obs.device.display())) && !line.contains('\n'),
        "one line naming the device: {line}"
    );
    assert_eq!(
        content_digest(image),
        before,
        "a refused disk must not change"
    );
    assert!(
        !root.join("/etc/systemd/system").exists(),
        "a refusal writes no mount unit"
    );
    assert!(
        !root.join(MOUNT_POINT).exists(),
        "a refusal creates no mount point"
    );
    (obs.clone(), obs.decision.reason)
}
