//! Finding the data disk: by Azure LUN link (two udev schemes) or an explicit device,
//! waiting for a late link with a deadline. Never a guessed kernel name.

use super::DiskSpec;
use crate::paths::Root;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a missing link is looked for again.
const POLL: Duration = Duration::from_millis(200);

/// Where the disk was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The path that led to it: a LUN link (under the root) or `data_disk.device`.
    pub via: PathBuf,
    /// The resolved device node, e.g. `/dev/sdc`.
    pub device: PathBuf,
}

/// The LUN links to try, in order: azure-vm-utils (works on NVMe sizes too), then the
/// older WALinuxAgent rules.
pub fn lun_links(root: &Root, lun: u8) -> [PathBuf; 2] {
    [
        root.join(format!("/dev/disk/azure/data/by-lun/{lun}")),
        root.join(format!("/dev/disk/azure/scsi1/lun{lun}")),
    ]
}

/// Finds the configured disk, waiting up to `wait` for its link or node to appear.
pub fn find(cfg: &DiskSpec, root: &Root, wait: Duration) -> Result<Found> {
    let (key, what) = (cfg.purpose.key(), cfg.purpose.what());
    let candidates: Vec<PathBuf> = match &cfg.device {
        // An explicit device is a real node path, not a sandbox one.
        Some(device) => vec![device.clone()],
        None => lun_links(root, cfg.lun).to_vec(),
    };
    let deadline = Instant::now() + wait;
    let mut announced = false;
    loop {
        if let Some(found) = candidates.iter().find_map(|c| resolve(c)) {
            if announced {
                tracing::info!(step = "disk", via = %found.via.display(), device = %found.device.display(), "{what} appeared");
            }
            return Ok(found);
        }
        if Instant::now() >= deadline {
            break;
        }
        if !announced {
            tracing::info!(
                step = "disk",
                wait_seconds = wait.as_secs(),
                "waiting for the {what} to appear: {}",
                list(&candidates)
            );
            announced = true;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
    let dangling: Vec<&PathBuf> = candidates
        .iter()
        .filter(|c| c.symlink_metadata().is_ok())
        .collect();
    let dangling = if dangling.is_empty() {
        String::new()
    } else {
        format!(" ({} exists but points at nothing)", list(&dangling))
    };
    match &cfg.device {
        Some(device) => bail!(
            "{what} {} did not appear within {} s{dangling}; check {key}.device in the node config and that the disk is attached",
            device.display(),
            wait.as_secs()
        ),
        None => bail!(
            "{what} at LUN {lun} not found after {} s: tried {} (azure-vm-utils rules) and {} (WALinuxAgent rules){dangling}; check that the {what} is attached at LUN {lun} (`az vm show -d` lists storageProfile.dataDisks) and that one of those udev rule sets is installed",
            wait.as_secs(),
            candidates[0].display(),
            candidates[1].display(),
            lun = cfg.lun
        ),
    }
}

/// The device a candidate leads to, if it exists now.
fn resolve(candidate: &Path) -> Option<Found> {
    // udev creates the node before the link, so a dangling link is only transient.
    let device = std::fs::canonicalize(candidate).ok()?;
    Some(Found {
        via: candidate.to_path_buf(),
        device,
    })
}

fn list<P: AsRef<Path>>(paths: &[P]) -> String {
    paths
        .iter()
        .map(|p| p.as_ref().display().to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}
