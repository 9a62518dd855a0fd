//! Facts about the host: kernel and BTF for Cilium, CPU and memory, free space for RKE2.

use super::{Options, Outcome};
use crate::paths::Root;
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// Cilium 1.18 (bundled with RKE2 v1.31.14) needs Linux 5.10 or later.
const MIN_KERNEL: (u32, u32) = (5, 10);
const BTF: &str = "/sys/kernel/btf/vmlinux";
/// RKE2's minimum: 2 CPUs and 4 GB of memory (a 4 GB VM shows a little less).
const MIN_CPUS: usize = 2;
const MIN_MEMORY_BYTES: u64 = 3584 * 1024 * 1024;
/// Where RKE2 keeps images, etcd and pod data.
const RKE2_DATA_DIR: &str = "/var/lib/rancher";
/// The kubelet starts garbage-collecting images at 85% use and evicts pods under 10% free.
const WARN_FREE_PERCENT: u64 = 15;
const FAIL_FREE_PERCENT: u64 = 10;
const GIB: f64 = (1u64 << 30) as f64;

/// `kernel`: version and BTF.
pub(super) async fn kernel(opts: &Options) -> (Outcome, ()) {
    let release = sysinfo::System::kernel_version().unwrap_or_default();
    let btf = opts.cx.root.join(BTF).exists();
    (judge_kernel(&release, btf), ())
}

fn judge_kernel(release: &str, btf: bool) -> Outcome {
    let Some(version) = parse_kernel(release) else {
        return Outcome::warn(
            format!("cannot read the kernel version ({release:?})"),
            "check `uname -r`",
        );
    };
    if version < MIN_KERNEL {
        return Outcome::fail(
            format!(
                "Linux {release} is older than {}.{}",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            format!(
                "Cilium (RKE2 v1.31) needs Linux {}.{} or later: use a newer image (Debian 12, Ubuntu 22.04 or later)",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        );
    }
    if !btf {
        return Outcome::warn(
            format!("Linux {release} without BTF ({BTF} is missing)"),
            "eBPF programs built once and run everywhere (CO-RE: Hubble, Tetragon, Falco's modern driver) need a kernel with CONFIG_DEBUG_INFO_BTF=y, as the Debian and Ubuntu cloud kernels have",
        );
    }
    Outcome::ok(format!("Linux {release}, BTF at {BTF}"))
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `resources`: CPUs and memory against RKE2's minimum, load and memory available now.
pub(super) async fn resources() -> (Outcome, ()) {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let cpus = sys.cpus().len();
    let (total, available) = (sys.total_memory(), sys.available_memory());
    let load = sysinfo::System::load_average();
    let finding = format!(
        "{cpus} CPUs, {:.1} GiB memory ({:.1} GiB available), load {:.2} {:.2} {:.2}",
        total as f64 / GIB,
        available as f64 / GIB,
        load.one,
        load.five,
        load.fifteen
    );
    let outcome = if cpus < MIN_CPUS || total < MIN_MEMORY_BYTES {
        Outcome::warn(
            finding,
            "RKE2 needs at least 2 CPUs and 4 GB of memory (8 GB recommended for a server): choose a larger VM size (infra-tofu vm_size)",
        )
    } else if available < total / 10 {
        Outcome::warn(
            finding,
            "less than 10% of memory is available: the kubelet evicts pods under memory pressure; see `top -o %MEM`",
        )
    } else {
        Outcome::ok(finding)
    };
    (outcome, ())
}

/// Free space of the filesystem holding a path.
pub(super) struct FreeSpace {
    pub free: u64,
    pub total: u64,
}

impl FreeSpace {
    pub fn free_percent(&self) -> u64 {
        (self.free as u128 * 100)
            .checked_div(self.total as u128)
            .unwrap_or(0) as u64
    }

    pub fn describe(&self) -> String {
        format!(
            "{:.1} GiB free of {:.1} GiB ({}%)",
            self.free as f64 / GIB,
            self.total as f64 / GIB,
            self.free_percent()
        )
    }
}

/// statvfs of one path: exact, and it never touches other (possibly hung) mounts.
pub(super) fn free_space(path: &Path) -> Result<FreeSpace> {
    let st =
        nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    let frsize = st.fragment_size() as u64;
    Ok(FreeSpace {
        free: st.blocks_available() as u64 * frsize,
        total: st.blocks() as u64 * frsize,
    })
}

/// `disk-space`: free space where RKE2 keeps images and pod data (the nearest existing
/// directory on the way to /var/lib/rancher).
pub(super) async fn disk_space(opts: &Options) -> (Outcome, ()) {
    let root = opts.cx.root.clone();
    let outcome = super::blocking(move || {
        let (node_path, path) = nearest_existing(&root, RKE2_DATA_DIR);
        match free_space(&path) {
            Ok(free) => {
                let text = format!("{}: {}", node_path.display(), free.describe());
                let pct = free.free_percent();
                let hint = "free space: `crictl rmi --prune` removes unused images; or grow the OS disk (infra-tofu os_disk size, then `growpart` and `resize2fs`)";
                if pct < FAIL_FREE_PERCENT {
                    Outcome::fail(text + ": the kubelet evicts pods below 10% free", hint)
                } else if pct < WARN_FREE_PERCENT {
                    Outcome::warn(text + ": the kubelet garbage-collects images above 85% use", hint)
                } else {
                    Outcome::ok(text)
                }
            }
            Err(e) => Outcome::fail(format!("{e:#}"), "check the filesystem"),
        }
    })
    .await
    .unwrap_or_else(|e| Outcome::fail(format!("{e:#}"), "report this doctor bug"));
    (outcome, ())
}

/// `node_path` or its nearest existing ancestor: (the node path, the path under `root`).
fn nearest_existing(root: &Root, node_path: &str) -> (PathBuf, PathBuf) {
    let mut p = PathBuf::from(node_path);
    loop {
        let under = root.join(&p);
        if under.exists() || !p.pop() {
            return (p, under);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn kernel_versions_and_btf() {
        assert_eq!(parse_kernel("6.1.0-27-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("5.15.0-1074-azure"), Some((5, 15)));
        assert_eq!(parse_kernel("garbage"), None);
        assert_eq!(
            judge_kernel("6.1.0-27-cloud-amd64", true).status,
            Status::Ok
        );
        assert_eq!(judge_kernel("5.10.0", true).status, Status::Ok);
        let old = judge_kernel("5.4.0-1109-azure", true);
        assert_eq!(old.status, Status::Fail);
        assert!(old.hint.unwrap().contains("5.10"));
        assert_eq!(judge_kernel("6.1.0", false).status, Status::Warn);
    }

    #[test]
    fn free_space_percent_and_nearest_directory() {
        let f = FreeSpace {
            free: 15,
            total: 100,
        };
        assert_eq!(f.free_percent(), 15);
        assert_eq!(FreeSpace { free: 0, total: 0 }.free_percent(), 0);
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.join("/var/lib")).unwrap();
        let (node, under) = nearest_existing(&root, "/var/lib/rancher");
        assert_eq!(node, PathBuf::from("/var/lib"));
        assert_eq!(under, dir.path().join("var/lib"));
        assert!(free_space(&under).unwrap().total > 0);
    }
}
