//! The format-in-progress marker: how a run killed in the middle of `mkfs.ext4` is
//! finished by the next run instead of leaving a disk that must be refused.
//!
//! mke2fs writes the primary superblock last, but on a large disk it writes the reserved
//! GDT blocks, bitmaps and the journal before that. An interrupted mkfs can therefore
//! leave a disk with no signature and non-zero data in its first MiB, which the
//! decision table refuses. The marker is written (and synced) on the OS disk before mkfs
//! starts, and removed (and synced) after the re-probe has confirmed our ext4 and
//! *before* the first mount. So while it exists, the disk has held nothing but our own
//! unfinished mkfs, and formatting it again loses nothing. A rebuilt VM has no marker,
//! so there such a disk is refused, as the spec asks.

use super::Purpose;
use crate::fsutil::{self, write_if_changed};
use crate::paths::{Root, STATE_DIR};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The data disk's marker's node path (each disk purpose has its own:
/// [`super::Purpose::format_marker`]), so two disks formatted in the same run never share one.
pub const FORMAT_MARKER: &str = "/var/lib/canarie-agent/data-disk-format.json";
/// The server state disk's marker.
pub const STATE_FORMAT_MARKER: &str = "/var/lib/canarie-agent/server-state-disk-format.json";

/// What the marker records: enough to recognise the same disk after a reboot, when the
/// kernel name may have changed but the LUN link has not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatMarker {
    /// The LUN link (or configured device) that led to the disk.
    pub via: PathBuf,
    /// The device node it resolved to when the format started.
    pub device: PathBuf,
    pub size_bytes: u64,
    pub label: String,
}

impl FormatMarker {
    fn path(root: &Root, purpose: Purpose) -> PathBuf {
        debug_assert!(purpose.format_marker().starts_with(STATE_DIR));
        root.join(purpose.format_marker())
    }

    /// Writes the marker durably (before mkfs starts).
    pub fn write(&self, root: &Root, purpose: Purpose) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("serializing the format marker")?;
        write_if_changed(&Self::path(root, purpose), &json, 0o644)
            .with_context(|| format!("writing the format marker {}", purpose.format_marker()))?;
        Ok(())
    }

    /// The marker left by an earlier run, if any. An unreadable marker counts as none:
    /// without it, a half-formatted disk is refused, which is the safe side.
    pub fn read(root: &Root, purpose: Purpose) -> Option<FormatMarker> {
        let path = Self::path(root, purpose);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(marker) => Some(marker),
            Err(e) => {
                tracing::warn!(step = "disk", path = %path.display(), "ignoring an unreadable format marker: {e}");
                None
            }
        }
    }

    /// Removes the marker durably (after the re-probe confirmed our ext4, before mount).
    pub fn clear(root: &Root, purpose: Purpose) -> Result<()> {
        fsutil::remove_if_exists(&Self::path(root, purpose))
            .with_context(|| format!("clearing the {}'s format marker", purpose.what()))?;
        Ok(())
    }

    /// True when this marker was left for this disk: its link still leads to `device`
    /// (kernel names may move between boots; the LUN link follows the disk), and size
    /// and label are the same.
    pub fn is_for(&self, device: &Path, size_bytes: u64, label: &str) -> bool {
        let same_disk = std::fs::canonicalize(&self.via).is_ok_and(|d| d == device);
        same_disk && self.size_bytes == size_bytes && self.label == label
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const D: Purpose = Purpose::LonghornData;

    #[test]
    fn each_purpose_has_its_own_marker() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let m = FormatMarker {
            via: "/dev/disk/azure/data/by-lun/1".into(),
            device: "/dev/sdd".into(),
            size_bytes: 1 << 30,
            label: "rke2-server".into(),
        };
        m.write(&root, Purpose::ServerState).unwrap();
        assert_eq!(FormatMarker::read(&root, D), None);
        FormatMarker::clear(&root, D).unwrap();
        assert_eq!(FormatMarker::read(&root, Purpose::ServerState), Some(m));
    }

    #[test]
    fn write_read_clear_and_match() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(FormatMarker::read(&root, D), None);
        let disk = dir.path().join("sdd");
        std::fs::write(&disk, b"").unwrap();
        let link = dir.path().join("lun0");
        std::os::unix::fs::symlink(&disk, &link).unwrap();
        let m = FormatMarker {
            via: link.clone(),
            device: "/dev/sdc".into(),
            size_bytes: 1 << 40,
            label: "longhorn".into(),
        };
        m.write(&root, D).unwrap();
        let back = FormatMarker::read(&root, D).unwrap();
        assert_eq!(back, m);
        assert!(
            back.is_for(&disk, 1 << 40, "longhorn"),
            "the link now leads to sdd"
        );
        assert!(
            !back.is_for(Path::new("/dev/sdc"), 1 << 40, "longhorn"),
            "a kernel name alone is no proof"
        );
        assert!(!back.is_for(&disk, 1 << 39, "longhorn"));
        assert!(!back.is_for(&disk, 1 << 40, "other"));
        FormatMarker::clear(&root, D).unwrap();
        assert_eq!(FormatMarker::read(&root, D), None);
        FormatMarker::clear(&root, D).unwrap();
    }

    #[test]
    fn a_corrupt_marker_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let path = root.join(FORMAT_MARKER);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(FormatMarker::read(&root, D), None);
    }
}
