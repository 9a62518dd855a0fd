//! The persistent mount: a systemd mount unit we own entirely, enabled by its
//! `local-fs.target.wants` symlink (what `systemctl enable` would create).

use super::Purpose;
use crate::fsutil::{self, create_dirs, write_if_changed, WriteOutcome};
use crate::paths::Root;
use anyhow::{Context, Result};
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path};

/// Where administrator/agent units live.
pub const SYSTEMD_UNIT_DIR: &str = "/etc/systemd/system";

/// What persisting the mount changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    pub unit: WriteOutcome,
    pub wants_link_changed: bool,
}

impl Persisted {
    pub fn changed(&self) -> bool {
        self.unit != WriteOutcome::Unchanged || self.wants_link_changed
    }
}

/// The mount unit's name for `mount_point`, as `systemd-escape --path --suffix=mount`.
pub fn unit_name(mount_point: &Path) -> String {
    format!("{}.mount", escape_path(mount_point))
}

/// systemd's path escaping (systemd.unit(5), "String Escaping for Inclusion in Unit
/// Names"): drop redundant slashes, turn `/` into `-`, and write every byte other than
/// ASCII letters, digits, `:`, `_` and `.` (and a leading `.`) as `\xNN`.
pub fn escape_path(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return "-".to_string();
    }
    let joined = parts.join("/");
    let mut out = String::with_capacity(joined.len());
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The unit text: mount by filesystem UUID, `nofail` so a missing disk never blocks
/// boot (RKE2's `RequiresMountsFor=` keeps Longhorn off the root filesystem instead).
pub fn unit_contents(purpose: Purpose, uuid: &str, mount_point: &Path) -> String {
    let description = purpose.description();
    // `%` starts a unit-file specifier; a literal one is written `%%`.
    let where_ = mount_point.display().to_string().replace('%', "%%");
    format!(
        "# Written by canarie-agent for the {description}; it is rewritten on every run.\n\
         [Unit]\n\
         Description={description} (canarie-agent)\n\
         \n\
         [Mount]\n\
         What=/dev/disk/by-uuid/{uuid}\n\
         Where={where_}\n\
         Type=ext4\n\
         Options=defaults,nofail\n\
         \n\
         [Install]\n\
         WantedBy=local-fs.target\n"
    )
}

/// Writes the unit and its wants symlink under `root`; unchanged files are left alone.
pub fn persist(root: &Root, purpose: Purpose, mount_point: &Path, uuid: &str) -> Result<Persisted> {
    let name = unit_name(mount_point);
    let unit_path = Path::new(SYSTEMD_UNIT_DIR).join(&name);
    let unit = write_if_changed(
        &root.join(&unit_path),
        unit_contents(purpose, uuid, mount_point).as_bytes(),
        0o644,
    )
    .with_context(|| format!("writing the mount unit {}", unit_path.display()))?;
    let link = root.join(
        Path::new(SYSTEMD_UNIT_DIR)
            .join("local-fs.target.wants")
            .join(&name),
    );
    let wants_link_changed = ensure_symlink(&link, &unit_path)
        .with_context(|| format!("enabling {name} (symlink {})", link.display()))?;
    Ok(Persisted {
        unit,
        wants_link_changed,
    })
}

/// Makes `link` a symlink to `target`, atomically replacing anything else there.
fn ensure_symlink(link: &Path, target: &Path) -> Result<bool> {
    match fs::read_link(link) {
        Ok(current) if current == target => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::InvalidInput => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", link.display())),
    }
    let dir = link.parent().context("the link has no parent directory")?;
    create_dirs(dir)?;
    let tmp = fsutil::temp_path(link)?;
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    fs::rename(&tmp, link)
        .with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))?;
    fsutil::sync_dir(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_match_systemd_escape() {
        // Expected values are `systemd-escape --path` output.
        assert_eq!(
            unit_name(Path::new("/var/lib/longhorn")),
            "var-lib-longhorn.mount"
        );
        assert_eq!(escape_path(Path::new("/mnt/my-disk")), "mnt-my\\x2ddisk");
        assert_eq!(escape_path(Path::new("/data/.hidden")), "data-.hidden");
        assert_eq!(escape_path(Path::new("/.x")), "\\x2ex");
        assert_eq!(escape_path(Path::new("/a b/ü")), "a\\x20b-\\xc3\\xbc");
        assert_eq!(escape_path(Path::new("//var//lib/")), "var-lib");
        assert_eq!(escape_path(Path::new("/")), "-");
    }

    #[test]
    fn persist_is_idempotent_and_repairs_a_wrong_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mp = Path::new("/var/lib/longhorn");
        let first = persist(&root, Purpose::LonghornData, mp, "0123-abcd").unwrap();
        assert_eq!(first.unit, WriteOutcome::Created);
        assert!(first.wants_link_changed);
        let unit = fs::read_to_string(dir.path().join("etc/systemd/system/var-lib-longhorn.mount"))
            .unwrap();
        assert!(
            unit.contains("What=/dev/disk/by-uuid/0123-abcd\n"),
            "{unit}"
        );
        assert!(
            unit.contains("Where=/var/lib/longhorn\n")
                && unit.contains("Options=defaults,nofail\n"),
            "{unit}"
        );
        assert!(unit.contains("WantedBy=local-fs.target\n"), "{unit}");
        let link = dir
            .path()
            .join("etc/systemd/system/local-fs.target.wants/var-lib-longhorn.mount");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from("/etc/systemd/system/var-lib-longhorn.mount")
        );

        assert!(!persist(&root, Purpose::LonghornData, mp, "0123-abcd")
            .unwrap()
            .changed());

        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        let repaired = persist(&root, Purpose::LonghornData, mp, "0123-abcd").unwrap();
        assert_eq!(repaired.unit, WriteOutcome::Unchanged);
        assert!(repaired.wants_link_changed);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from("/etc/systemd/system/var-lib-longhorn.mount")
        );
    }
}
