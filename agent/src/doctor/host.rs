//! Facts about the host: the RKE2 release installed, kernel and BTF for Cilium, CPU and
//! memory, free space for RKE2.

use super::{Options, Outcome};
use crate::paths::Root;
use crate::rke2::RKE2_VERSION;
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where RKE2's install script puts the binary: /usr/local/bin, or /opt/rke2/bin where
/// /usr/local is read-only.
const RKE2_BINARIES: &[&str] = &["/usr/local/bin/rke2", "/opt/rke2/bin/rke2"];

/// Cilium 1.18 and later need Linux 5.10 or later (RKE2 v1.36.3 bundles Cilium 1.19).
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

/// `rke2-version`: the RKE2 release on the node next to the one this agent renders for.
pub(super) async fn rke2_version(opts: &Options) -> (Outcome, ()) {
    let Some(binary) = RKE2_BINARIES
        .iter()
        .map(|p| opts.cx.root.join(p))
        .find(|p| p.is_file())
    else {
        return (
            Outcome::fail(
                format!("no rke2 binary ({})", RKE2_BINARIES.join(", ")),
                format!("the VM image must contain RKE2 {RKE2_VERSION} (docs/image.md)"),
            ),
            (),
        );
    };
    let output = tokio::process::Command::new(&binary)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let found = match &output {
        Ok(o) if o.status.success() => parse_rke2_version(&String::from_utf8_lossy(&o.stdout)),
        _ => None,
    };
    let Some(found) = found else {
        let why = match output {
            Ok(o) => format!("it exited with {}", o.status),
            Err(e) => e.to_string(),
        };
        return (
            Outcome::warn(
                format!("cannot read the version of {}: {why}", binary.display()),
                format!(
                    "run `{} --version`; this agent is built for RKE2 {RKE2_VERSION}",
                    binary.display()
                ),
            ),
            (),
        );
    };
    (judge_rke2_version(&found, RKE2_VERSION), ())
}

/// The version in `rke2 --version`'s first line: `rke2 version v1.36.3+rke2r1 (c4f306e6)`.
fn parse_rke2_version(output: &str) -> Option<String> {
    let mut words = output.lines().next()?.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("rke2"), Some("version"), Some(v)) if v.starts_with('v') => Some(v.to_string()),
        _ => None,
    }
}

fn judge_rke2_version(found: &str, built_for: &str) -> Outcome {
    if found == built_for {
        return Outcome::ok(format!("RKE2 {found}, the release this agent is built for"));
    }
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    let finding = format!("RKE2 {found} on the node; this agent is built for RKE2 {built_for}");
    let hint = if minor(found) == minor(built_for) {
        format!(
            "another patch of the same line: usually harmless, but the agent's files were checked against {built_for};              bake the image with {built_for} (docs/image.md) or update the agent"
        )
    } else {
        format!(
            "another minor release: RKE2's flags and its bundled charts (Cilium, Traefik) differ from the ones the              agent's files were checked against; use an image with RKE2 {built_for} (docs/image.md, docs/lifecycle.md)"
        )
    };
    Outcome::warn(finding, hint)
}

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
                "Cilium (bundled with RKE2) needs Linux {}.{} or later: use a newer image (Debian 12, Ubuntu 22.04 or later)",
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
    fn rke2_version_is_read_and_compared_with_the_build() {
        assert_eq!(
            parse_rke2_version("rke2 version v1.36.3+rke2r1 (c4f306e6)\ngo version go1.26.5\n"),
            Some("v1.36.3+rke2r1".into())
        );
        assert_eq!(parse_rke2_version("rke2: command not found"), None);
        assert_eq!(parse_rke2_version(""), None);
        let same = judge_rke2_version(RKE2_VERSION, RKE2_VERSION);
        assert_eq!(same.status, Status::Ok);
        assert!(same.finding.contains(RKE2_VERSION));
        let patch = judge_rke2_version("v1.36.1+rke2r1", "v1.36.3+rke2r1");
        assert_eq!(patch.status, Status::Warn);
        assert!(
            patch.finding.contains("v1.36.1+rke2r1") && patch.finding.contains("v1.36.3+rke2r1")
        );
        assert!(patch.hint.unwrap().contains("same line"));
        let minor = judge_rke2_version("v1.31.14+rke2r2", "v1.36.3+rke2r1");
        assert_eq!(minor.status, Status::Warn);
        assert!(minor.hint.unwrap().contains("another minor release"));
    }

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
