//! The only code that writes to a data disk: mkfs.ext4 on a disk the decision found
//! blank, e2fsck -p on our own filesystem, and the mount.

use super::sysfs;
use crate::subprocess::{last_line, last_line_of, Program};
use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use std::path::Path;

/// Formats `device` ext4 with `label`. The caller's probe is the gate: mkfs.ext4 asks
/// before overwriting only on a TTY, and `-F` would skip even that.
pub(crate) fn make_ext4(device: &Path, label: &str) -> Result<()> {
    tracing::info!(step = "disk", action = "format", device = %device.display(), label, "formatting the blank data disk as ext4");
    let out = Program::new("mkfs.ext4")
        .args(["-F", "-L"])
        .arg(label)
        .arg(device)
        .output()
        .with_context(|| format!("running mkfs.ext4 on {}", device.display()))?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 -F -L {label} {} failed ({}): {}",
            device.display(),
            out.status,
            last_line(&out.stderr)
        );
    }
    Ok(())
}

/// `e2fsck -p`: replays the journal and fixes what is safe to fix unattended.
/// Returns the problem when e2fsck could not make the filesystem clean. Exit codes
/// (e2fsck(8)): 0 clean, 1 errors fixed, 2 fixed and a reboot advised (only meaningful
/// for a mounted root); 4 and above mean errors left or a failed check.
pub(crate) fn check_ext4(device: &Path) -> Result<Option<String>> {
    tracing::info!(step = "disk", action = "fsck", device = %device.display(), "checking the data disk's filesystem (e2fsck -p)");
    let out = Program::new("e2fsck")
        .arg("-p")
        .arg(device)
        .output()
        .with_context(|| format!("running e2fsck -p on {}", device.display()))?;
    let code = out.status.code().unwrap_or(-1);
    Ok(match code {
        0 => None,
        1 | 2 => {
            tracing::warn!(step = "disk", device = %device.display(), code, "e2fsck -p repaired the filesystem: {}", last_line(&out.stdout));
            None
        }
        _ => Some(format!(
            "e2fsck -p found problems on {} it will not fix unattended (exit {code}: {}); not mounting it: run `e2fsck -f {}` by hand",
            device.display(),
            last_line_of(&out),
            device.display()
        )),
    })
}

/// Mounts `device` (ext4) at `target` now, creating the directory.
pub(crate) fn mount_now(device: &Path, target: &Path) -> Result<()> {
    let mounts = sysfs::read_mountinfo()?;
    if let Some(other) = mounts.iter().find(|m| m.mount_point == target) {
        bail!(
            "{} is already a mount point ({} {}); refusing to stack the data disk on it: unmount it first",
            target.display(),
            other.fs_type,
            other.source
        );
    }
    std::fs::create_dir_all(target)
        .with_context(|| format!("creating the mount point {}", target.display()))?;
    if std::fs::read_dir(target)
        .with_context(|| format!("listing {}", target.display()))?
        .next()
        .is_some()
    {
        // Something wrote here while the disk was absent; mounting hides it, not deletes it.
        tracing::warn!(step = "disk", mount_point = %target.display(), "the mount point is not empty on the root filesystem; its files stay hidden under the data disk");
    }
    tracing::info!(step = "disk", action = "mount", device = %device.display(), mount_point = %target.display(), "mounting the data disk");
    mount(
        Some(device),
        target,
        Some("ext4"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting {} at {}", device.display(), target.display()))?;
    Ok(())
}
