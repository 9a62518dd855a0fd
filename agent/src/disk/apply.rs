//! The only code that writes to a data disk: mkfs.ext4 on a disk the decision found
//! blank, e2fsck -p on our own filesystem, and the mount (with its checks before and after).

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

/// Refuses a mount point that already has something mounted on it, and warns when files
/// on the root filesystem would be hidden under the data disk.
pub(crate) fn check_mount_point(target: &Path, what: &str) -> Result<()> {
    let mounts = sysfs::read_mountinfo()?;
    if let Some(other) = mounts.iter().find(|m| m.mount_point == target) {
        bail!(
            "{} is already a mount point ({} {}); refusing to stack the {what} on it: unmount it first",
            target.display(),
            other.fs_type,
            other.source
        );
    }
    let has_files = match std::fs::read_dir(target) {
        Ok(mut entries) => entries.next().is_some(),
        // systemd creates a mount unit's missing mount point itself.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("listing {}", target.display())),
    };
    if has_files {
        // Something wrote here while the disk was absent; mounting hides it, not deletes it.
        tracing::warn!(step = "disk", mount_point = %target.display(), "the mount point is not empty on the root filesystem; its files stay hidden under the {what}");
    }
    Ok(())
}

/// Mounts `device` (ext4) at `target` with mount(2), creating the directory. The mount is
/// made in this process's mount namespace: only for a `--root` sandbox (see
/// [`super::Mounter`]).
pub(crate) fn mount_syscall(device: &Path, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("creating the mount point {}", target.display()))?;
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

/// Confirms from mountinfo that `device` itself is what is mounted at `target` now. A mount
/// made by systemd in the host's namespace shows here too (mounts propagate into the
/// service's namespace), and systemd mounts by filesystem UUID, which a second disk with
/// the same UUID (a cloned snapshot) could also answer to.
pub(crate) fn confirm_mounted(device: &Path, target: &Path, what: &str) -> Result<()> {
    let want = sysfs::block_devnum(device)?
        .with_context(|| format!("{} is not a block device", device.display()))?;
    let mounts = sysfs::read_mountinfo()?;
    // The last entry for a path is the one on top.
    match mounts.iter().rev().find(|m| m.mount_point == target) {
        Some(m) if m.devnum == Some(want) => Ok(()),
        Some(m) => bail!(
            "{} is mounted from {} ({} {}), not from the {what} {} ({want}); unmount it (`umount {}`) and check which disk holds that filesystem UUID",
            target.display(),
            m.devnum.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
            m.fs_type,
            m.source,
            device.display(),
            target.display()
        ),
        None => bail!(
            "the mount of {} at {} reported success but mountinfo shows nothing mounted there",
            device.display(),
            target.display()
        ),
    }
}
