//! Atomic, idempotent file writes: a file is either its old content or its new content,
//! never a torn mix, and is created with its final mode (a 0600 file is never briefly 0644).

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`write_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Unchanged,
    Created,
    Updated,
}

/// True when `path` exists with exactly `contents` and `mode`.
pub fn is_current(path: &Path, contents: &[u8], mode: u32) -> Result<bool> {
    match fs::read(path) {
        Ok(existing) => {
            let meta = fs::metadata(path)
                .with_context(|| format!("reading metadata of {}", path.display()))?;
            Ok(existing == contents && meta.permissions().mode() & 0o7777 == mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `contents` to `path` with `mode` unless it is already there: temp file in the
/// same directory (created with `mode`), fsync, rename, fsync the directory.
pub fn write_if_changed(path: &Path, contents: &[u8], mode: u32) -> Result<WriteOutcome> {
    let existed = path.exists();
    if is_current(path, contents, mode)? {
        return Ok(WriteOutcome::Unchanged);
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    create_dirs(dir)?;
    let tmp = temp_path(path)?;
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask may have narrowed the mode; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", tmp.display()))?;
        f.write_all(contents)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(if existed {
        WriteOutcome::Updated
    } else {
        WriteOutcome::Created
    })
}

/// The mode of every directory the agent creates, whatever the umask: the packaged unit
/// runs with `UMask=0077`, but directories under /etc/rancher, /var/lib/rancher and
/// /etc/systemd/system are world-searchable by convention (RKE2 and `systemctl` create them
/// so); the files in them carry their own modes.
pub const DIR_MODE: u32 = 0o755;

/// Creates `dir` and its missing parents, each with [`DIR_MODE`]. Existing directories
/// keep their mode.
pub fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("setting mode of directory {}", dir.display())),
        // Created meanwhile by someone else: theirs, mode included.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating directory {}", dir.display())),
    }
}

/// Removes the file `path` if it is there, then fsyncs its directory so the removal survives
/// a crash. Returns whether there was a file to remove. A directory at `path` is refused: the
/// agent only ever owns files.
pub fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    sync_dir(dir)?;
    Ok(true)
}

/// The temporary name `path` is written under before its rename: hidden, in the same
/// directory (a rename never crosses filesystems). A leftover from a killed run is ours and
/// is removed here.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.canarie-tmp"));
    let _ = fs::remove_file(&tmp);
    Ok(tmp)
}

/// fsyncs the directory `dir`, so a rename or removal in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_then_reports_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.yaml");
        assert_eq!(
            write_if_changed(&path, b"x: 1\n", 0o644).unwrap(),
            WriteOutcome::Created
        );
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(
            write_if_changed(&path, b"x: 1\n", 0o644).unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(
            write_if_changed(&path, b"x: 2\n", 0o644).unwrap(),
            WriteOutcome::Updated
        );
        assert_eq!(fs::read(&path).unwrap(), b"x: 2\n");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
    }

    #[test]
    fn secret_file_has_its_mode_and_mode_changes_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.yaml");
        write_if_changed(&path, b"token: t\n", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            write_if_changed(&path, b"token: t\n", 0o600).unwrap(),
            WriteOutcome::Updated
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn remove_if_exists_removes_once_and_refuses_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.yaml");
        write_if_changed(&path, b"x: 1\n", 0o600).unwrap();
        let keep = dir.path().join("keep.yaml");
        fs::write(&keep, b"y: 1\n").unwrap();
        assert!(remove_if_exists(&path).unwrap());
        assert!(!path.exists());
        assert!(!remove_if_exists(&path).unwrap(), "nothing left to remove");
        assert_eq!(fs::read(&keep).unwrap(), b"y: 1\n");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let err = remove_if_exists(&sub).unwrap_err();
        assert!(format!("{err:#}").contains("removing"), "{err:#}");
        assert!(sub.is_dir());
    }
}
