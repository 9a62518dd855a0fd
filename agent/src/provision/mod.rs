//! Platform provisioning without cloud-init: what Azure asks of a new VM from its instance
//! metadata (`compute.osProfile`, `compute.publicKeys`), converged on every boot.
//!
//! - the admin user (`adminUsername`): created when missing with `useradd`, password
//!   locked, in the groups Debian's cloud images give their default user (those the node
//!   has), with passwordless sudo as Azure's images grant it (a drop-in in /etc/sudoers.d);
//! - its `authorized_keys` (`publicKeys[].path`, which must lie under the user's home):
//!   exactly the keys IMDS lists, mode 0600 in a 0700 `.ssh`, owned by the user;
//! - the static hostname (`computerName`): over D-Bus to systemd-hostnamed on a node,
//!   written to `ROOT/etc/hostname` in a `--root` sandbox (no hostnamed there);
//! - SSH host keys, when sshd is installed: left to the package's
//!   canarie-ssh-host-keys.service where it is installed (it makes missing keys before
//!   sshd starts, beside the bootstrap: RKE2 does not wait for them), generated here
//!   (`ssh-keygen -A`) only where it is not (a `--root` sandbox);
//! - sshd: key login only, a drop-in ([`sshd`]) for `disablePasswordAuthentication`;
//! - the root filesystem grown to its disk ([`grow`]).
//!
//! [`observe`] reads the node, [`decide`] (pure) turns what it saw and what IMDS asks into
//! [`Task`]s, [`apply`] does one task. The step (`reconcile/steps/provisioning.rs`) observes
//! and decides again right before acting and once more to confirm.

pub mod accounts;
pub mod grow;
pub mod sshd;

use crate::azure::imds::Compute;
use crate::fsutil;
use crate::paths::Root;
use crate::subprocess::{self, Program};
use accounts::{Account, UserFacts};
use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The groups Debian's cloud images give their default user (cloud-init's `default_user`
/// in Debian's /etc/cloud/cloud.cfg), which is what an Azure admin user gets on them; only
/// those the node has are used.
pub const ADMIN_GROUPS: &[&str] = &[
    "adm", "audio", "cdrom", "dialout", "dip", "floppy", "netdev", "plugdev", "sudo", "video",
];
/// Passwordless sudo for the admin user, as waagent (`/etc/sudoers.d/waagent`) and
/// cloud-init (`/etc/sudoers.d/90-cloud-init-users`) grant it on Azure.
pub const SUDOERS_DROPIN: &str = "/etc/sudoers.d/90-canarie-admin";
/// sudo reads drop-ins only when they are not writable by anyone (sudoers(5)).
pub const SUDOERS_MODE: u32 = 0o440;
pub const KEYS_MODE: u32 = 0o600;
pub const SSH_DIR_MODE: u32 = 0o700;
/// What `ssh-keygen -A` generates (OpenSSH 9), each `/etc/ssh/ssh_host_<type>_key`.
pub const HOST_KEY_TYPES: &[&str] = &["rsa", "ecdsa", "ed25519"];
/// The package's unit that makes missing host keys before sshd starts, off the bootstrap's
/// path (packaging/deb/canarie-ssh-host-keys.service). Where it is installed, the keys are
/// its alone to make: two `ssh-keygen -A` at once would race for the same files.
pub const HOST_KEYS_UNIT: &str = "/lib/systemd/system/canarie-ssh-host-keys.service";

/// What Azure asks of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub user: String,
    pub hostname: String,
    /// Each authorized_keys file and its contents (one key a line).
    pub keys: BTreeMap<PathBuf, String>,
    /// `disablePasswordAuthentication` is false: a password login the node does not give
    /// (the password is not in IMDS; sshd stays key login only).
    pub password_login_requested: bool,
}

impl Desired {
    /// From instance metadata; a value the node must not take is an error naming it.
    pub fn from_metadata(compute: &Compute) -> Result<Desired> {
        let os = &compute.os_profile;
        let user = os.admin_username.clone();
        ensure!(
            accounts::valid_user_name(&user) && user != "root",
            "IMDS compute.osProfile.adminUsername {user:?} is not a user name this node takes \
             (letters, digits, '_' and '-', at most 32, not root); fix admin_username in infra-tofu"
        );
        let hostname = os.computer_name.clone();
        ensure!(
            valid_hostname(&hostname),
            "IMDS compute.osProfile.computerName {hostname:?} is not a valid hostname \
             (labels of letters, digits and '-', at most 64 characters); fix the VM's computer_name"
        );
        let mut keys: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (i, key) in compute.public_keys.iter().enumerate() {
            let line = key.key_data.trim();
            ensure!(
                !line.is_empty() && !line.contains(['\n', '\r', '\0']),
                "IMDS compute.publicKeys[{i}].keyData is empty or more than one line"
            );
            let file = keys.entry(PathBuf::from(&key.path)).or_default();
            file.push_str(line);
            file.push('\n');
        }
        Ok(Desired {
            user,
            hostname,
            keys,
            password_login_requested: sshd::password_login_requested(
                &os.disable_password_authentication,
            ),
        })
    }
}

/// An RFC 1123 hostname that hostnamed takes as static hostname (at most 64 characters).
pub fn valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// One authorized_keys file as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysFile {
    /// Contents and mode are right.
    pub current: bool,
    /// File and directory owned by the user, the directory 0700.
    pub owned: bool,
}

/// SSH host keys as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// Types without a key, for the step to generate.
    Missing(Vec<&'static str>),
    /// Types without a key, which [`HOST_KEYS_UNIT`] makes in this boot.
    LeftToUnit(Vec<&'static str>),
    /// sshd or ssh-keygen is not installed: nothing to generate keys for or with.
    NoSsh(&'static str),
}

/// What the node has of what [`Desired`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub user: UserFacts,
    /// The user's home directory exists.
    pub home_present: bool,
    /// `None`: no /etc/sudoers.d (sudo is not installed).
    pub sudoers_current: Option<bool>,
    pub keys: BTreeMap<PathBuf, KeysFile>,
    pub hostname: String,
    pub host_keys: HostKeys,
    pub sshd_config: sshd::Config,
    pub root_fs: std::result::Result<grow::RootPartition, grow::Note>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    CreateUser {
        groups: Vec<String>,
    },
    /// The user's home, with /etc/skel's files, made whole or not at all.
    CreateHome,
    AddToGroups(Vec<String>),
    LockPassword,
    WriteSudoers,
    WriteKeys(PathBuf),
    SetHostname,
    GenerateHostKeys(Vec<&'static str>),
    WriteSshdConfig,
    Grow(grow::Grow),
}

/// The decision: what to do, and what was left alone and why (logged once a run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub tasks: Vec<Task>,
    pub notes: Vec<String>,
}

/// Where a new admin user's home goes.
pub fn default_home(user: &str) -> PathBuf {
    PathBuf::from("/home").join(user)
}

/// A new home's mode: the user's alone to write, readable by its group (Ubuntu's
/// `HOME_MODE`; sshd's `StrictModes` accepts it).
pub const HOME_MODE: u32 = 0o750;

/// The sudoers line for `user` (a name [`accounts::valid_user_name`] accepted).
pub fn sudoers_contents(user: &str) -> String {
    format!("# Written by canarie-agent: the Azure admin user, as Azure images grant it.\n{user} ALL=(ALL) NOPASSWD:ALL\n")
}

/// What the node must change. Errors are refusals: an existing system account under the
/// admin's name, a key file outside the admin's home.
pub fn decide(desired: &Desired, seen: &Observed) -> Result<Decision> {
    let mut d = Decision::default();
    let wanted_groups: Vec<String> = ADMIN_GROUPS
        .iter()
        .filter(|g| seen.user.groups.contains(**g))
        .map(|g| g.to_string())
        .collect();
    let home = match &seen.user.account {
        None => {
            d.tasks.push(Task::CreateUser {
                groups: wanted_groups,
            });
            d.tasks.push(Task::CreateHome);
            default_home(&desired.user)
        }
        Some(account) => {
            ensure!(
                account.uid >= 1000,
                "the admin user {:?} that IMDS names is a system account on this node (uid {}); \
                 choose another admin_username",
                account.name,
                account.uid
            );
            let missing: Vec<String> = wanted_groups
                .into_iter()
                .filter(|g| !seen.user.member_of.contains(g))
                .collect();
            if !missing.is_empty() {
                d.tasks.push(Task::AddToGroups(missing));
            }
            if !seen.user.password_locked {
                d.tasks.push(Task::LockPassword);
            }
            if !seen.home_present {
                d.tasks.push(Task::CreateHome);
            }
            account.home.clone()
        }
    };
    match seen.sudoers_current {
        Some(false) => d.tasks.push(Task::WriteSudoers),
        Some(true) => {}
        None => d
            .notes
            .push("no /etc/sudoers.d (sudo is not installed): no sudo rule written".into()),
    }
    for path in desired.keys.keys() {
        ensure!(
            accounts::is_under(path, &home),
            "IMDS compute.publicKeys path {} is not under the admin user's home {}; \
             use {}/.ssh/authorized_keys",
            path.display(),
            home.display(),
            home.display()
        );
        let fine = seen
            .keys
            .get(path)
            .is_some_and(|k| k.current && k.owned && seen.user.account.is_some());
        if !fine {
            d.tasks.push(Task::WriteKeys(path.clone()));
        }
    }
    if seen.hostname != desired.hostname {
        d.tasks.push(Task::SetHostname);
    }
    match &seen.host_keys {
        HostKeys::Missing(types) if !types.is_empty() => {
            d.tasks.push(Task::GenerateHostKeys(types.clone()))
        }
        HostKeys::Missing(_) => {}
        HostKeys::LeftToUnit(types) => d.notes.push(format!(
            "SSH host keys {} missing: {} makes them before sshd starts, beside the bootstrap",
            types.join(","),
            unit_name(HOST_KEYS_UNIT)
        )),
        HostKeys::NoSsh(why) => d.notes.push(format!("{why}: no SSH host keys generated")),
    }
    match &seen.sshd_config {
        sshd::Config::DropIn(false) => d.tasks.push(Task::WriteSshdConfig),
        sshd::Config::DropIn(true) | sshd::Config::NoSshd => {}
        sshd::Config::NotIncluded(note) => d.notes.push(note.clone()),
    }
    match seen.root_fs.as_ref().map(grow::decide) {
        Ok(Ok(Some(g))) => d.tasks.push(Task::Grow(g)),
        Ok(Ok(None)) => {}
        Ok(Err(note)) => d.notes.push(note),
        Err(note) => d.notes.push(note.clone()),
    }
    Ok(d)
}

/// Why cloud-init is the node's provisioner, when it is: installed and not disabled (an
/// image baked with `--provisioning cloud-init`). Two provisioners must not fight over the
/// same user and hostname.
pub fn cloud_init_provisions(root: &Root) -> Option<String> {
    if !root.join("/usr/bin/cloud-init").exists()
        || root.join("/etc/cloud/cloud-init.disabled").exists()
    {
        return None;
    }
    if root.is_host()
        && std::fs::read_to_string("/proc/cmdline")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "cloud-init=disabled"))
    {
        return None;
    }
    Some("cloud-init is installed and enabled: it provisions this node".into())
}

/// Where the hostname is read and set.
pub enum HostnameTarget {
    /// systemd-hostnamed on the system bus, or on the bus at this address.
    Hostnamed(Option<String>),
    /// `ROOT/etc/hostname` (a `--root` sandbox has no hostnamed of its own).
    File,
}

/// What the node has (read-only).
pub async fn observe(
    root: &Root,
    desired: &Desired,
    hostname: &HostnameTarget,
) -> Result<Observed> {
    let user = accounts::observe(root, &desired.user)?;
    let home_present = user
        .account
        .as_ref()
        .is_some_and(|a| root.join(&a.home).is_dir());
    let sudoers_dir = root.join("/etc/sudoers.d");
    let sudoers_current = if sudoers_dir.is_dir() {
        Some(fsutil::is_current(
            &root.join(SUDOERS_DROPIN),
            sudoers_contents(&desired.user).as_bytes(),
            SUDOERS_MODE,
        )?)
    } else {
        None
    };
    let mut keys = BTreeMap::new();
    for (path, contents) in &desired.keys {
        keys.insert(
            path.clone(),
            observe_keys(root, path, contents, user.account.as_ref())?,
        );
    }
    let hostname = match hostname {
        HostnameTarget::Hostnamed(address) => {
            crate::systemd::hostname::Hostnamed::connect(address.as_deref())
                .await?
                .static_hostname()
                .await?
        }
        HostnameTarget::File => read_optional(&root.join("/etc/hostname"))?
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    Ok(Observed {
        user,
        home_present,
        sudoers_current,
        keys,
        hostname,
        host_keys: observe_host_keys(root),
        sshd_config: sshd::observe(root)?,
        root_fs: grow::observe(root)?,
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn observe_keys(
    root: &Root,
    path: &Path,
    contents: &str,
    account: Option<&Account>,
) -> Result<KeysFile> {
    let host = root.join(path);
    let current = fsutil::is_current(&host, contents.as_bytes(), KEYS_MODE)?;
    let owned = match (account, host.parent()) {
        (Some(a), Some(dir)) => {
            let owns = |p: &Path| {
                std::fs::symlink_metadata(p)
                    .map(|m| m.uid() == a.uid && m.gid() == a.gid && !m.file_type().is_symlink())
                    .unwrap_or(false)
            };
            let dir_mode = std::fs::symlink_metadata(dir)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0);
            owns(&host) && owns(dir) && dir_mode == SSH_DIR_MODE
        }
        _ => false,
    };
    Ok(KeysFile { current, owned })
}

fn observe_host_keys(root: &Root) -> HostKeys {
    if !root.join("/etc/ssh/sshd_config").exists() {
        return HostKeys::NoSsh("sshd is not installed (no /etc/ssh/sshd_config)");
    }
    if which("ssh-keygen").is_none() {
        return HostKeys::NoSsh("ssh-keygen is not installed");
    }
    let missing: Vec<&'static str> = HOST_KEY_TYPES
        .iter()
        .copied()
        .filter(|t| !root.join(host_key_path(t)).exists())
        .collect();
    if !missing.is_empty() && root.join(HOST_KEYS_UNIT).exists() {
        HostKeys::LeftToUnit(missing)
    } else {
        HostKeys::Missing(missing)
    }
}

fn unit_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub fn host_key_path(key_type: &str) -> String {
    format!("/etc/ssh/ssh_host_{key_type}_key")
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Does `task`. `seen` is the observation the task was decided from, right before.
pub async fn apply(
    root: &Root,
    desired: &Desired,
    seen: &Observed,
    hostname: &HostnameTarget,
    task: &Task,
) -> Result<()> {
    let prefix: Vec<std::ffi::OsString> = if root.is_host() {
        Vec::new()
    } else {
        vec!["--prefix".into(), root.dir().as_os_str().to_owned()]
    };
    match task {
        Task::CreateUser { groups } => {
            // The home is made by the next task, whole or not at all: a useradd killed
            // between its account files and the home would leave a user without one.
            let mut useradd = Program::new("useradd")
                .args(&prefix)
                .args(["--no-create-home", "--user-group", "--shell", "/bin/bash"])
                .arg("--home-dir")
                .arg(default_home(&desired.user));
            if !groups.is_empty() {
                useradd = useradd.args(["--groups", &groups.join(",")]);
            }
            run(
                useradd.arg(&desired.user),
                "useradd (creating the admin user)",
            )?;
            // useradd leaves the password field "!" (locked); a distribution whose useradd
            // does otherwise is caught by the confirming observation.
        }
        Task::CreateHome => {
            let account = seen
                .user
                .account
                .as_ref()
                .with_context(|| format!("the admin user {} does not exist", desired.user))?;
            create_home(root, account)?;
        }
        Task::AddToGroups(groups) => run(
            Program::new("usermod")
                .args(&prefix)
                .args(["--append", "--groups", &groups.join(",")])
                .arg(&desired.user),
            "usermod (adding the admin user to its groups)",
        )?,
        Task::LockPassword => run(
            Program::new("usermod")
                .args(&prefix)
                .arg("--lock")
                .arg(&desired.user),
            "usermod --lock (locking the admin user's password)",
        )?,
        Task::WriteSudoers => {
            fsutil::write_if_changed(
                &root.join(SUDOERS_DROPIN),
                sudoers_contents(&desired.user).as_bytes(),
                SUDOERS_MODE,
            )
            .with_context(|| format!("writing {SUDOERS_DROPIN}"))?;
        }
        Task::WriteKeys(path) => {
            let account = seen
                .user
                .account
                .as_ref()
                .with_context(|| format!("the admin user {} does not exist", desired.user))?;
            write_keys(root, account, path, &desired.keys[path])?;
        }
        Task::SetHostname => match hostname {
            HostnameTarget::Hostnamed(address) => {
                crate::systemd::hostname::Hostnamed::connect(address.as_deref())
                    .await?
                    .set_static_hostname(&desired.hostname)
                    .await?
            }
            HostnameTarget::File => {
                fsutil::write_if_changed(
                    &root.join("/etc/hostname"),
                    format!("{}\n", desired.hostname).as_bytes(),
                    0o644,
                )
                .context("writing /etc/hostname")?;
            }
        },
        Task::GenerateHostKeys(_) => {
            let mut keygen = Program::new("ssh-keygen").arg("-A");
            if !root.is_host() {
                keygen = keygen.arg("-f").arg(root.dir());
            }
            run(keygen, "ssh-keygen -A (generating SSH host keys)")?;
        }
        Task::WriteSshdConfig => {
            fsutil::write_if_changed(
                &root.join(sshd::DROPIN),
                sshd::DROPIN_CONTENTS.as_bytes(),
                sshd::DROPIN_MODE,
            )
            .with_context(|| format!("writing {}", sshd::DROPIN))?;
        }
        Task::Grow(g) => {
            let part = seen
                .root_fs
                .as_ref()
                .map_err(|note| anyhow::anyhow!("{note}"))?;
            grow::apply(part, *g)?;
        }
    }
    Ok(())
}

/// Makes `account`'s home: a directory beside it, filled from /etc/skel (under the root),
/// given to the user, then renamed into place, so a killed run leaves either no home or a
/// whole one (and a leftover the next run removes).
fn create_home(root: &Root, account: &Account) -> Result<()> {
    let home = root.join(&account.home);
    let parent = home
        .parent()
        .with_context(|| format!("{} has no parent", account.home.display()))?;
    fsutil::create_dirs(parent)?;
    let tmp = fsutil::temp_path(&home)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    copy_skel(&root.join("/etc/skel"), &tmp, account)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(HOME_MODE))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    std::os::unix::fs::lchown(&tmp, Some(account.uid), Some(account.gid))
        .with_context(|| format!("giving {} to {}", tmp.display(), account.name))?;
    std::fs::rename(&tmp, &home)
        .with_context(|| format!("renaming {} to {}", tmp.display(), home.display()))?;
    fsutil::sync_dir(parent)
}

/// Copies the regular files and directories of `skel` (if it exists) into `to`, owned by
/// the user, modes kept. Symlinks and special files are skipped.
fn copy_skel(skel: &Path, to: &Path, account: &Account) -> Result<()> {
    let entries = match std::fs::read_dir(skel) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", skel.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", skel.display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let dest = to.join(entry.file_name());
        if meta.is_dir() {
            std::fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
            copy_skel(&entry.path(), &dest, account)?;
        } else if meta.is_file() {
            std::fs::copy(entry.path(), &dest).with_context(|| {
                format!("copying {} to {}", entry.path().display(), dest.display())
            })?;
        } else {
            continue;
        }
        std::fs::set_permissions(
            &dest,
            std::fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
        )
        .with_context(|| format!("setting the mode of {}", dest.display()))?;
        std::os::unix::fs::lchown(&dest, Some(account.uid), Some(account.gid))
            .with_context(|| format!("giving {} to {}", dest.display(), account.name))?;
    }
    Ok(())
}

/// Writes one authorized_keys file: its directory (0700) and the file (0600), both owned by
/// the admin user. A symlink on the way is refused: the agent writes as root into a
/// directory the user owns.
fn write_keys(root: &Root, account: &Account, path: &Path, contents: &str) -> Result<()> {
    let home = root.join(&account.home);
    let file = root.join(path);
    let dir = file
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    ensure!(
        home.is_dir(),
        "the admin user's home {} is missing",
        account.home.display()
    );
    // Each directory from the home down to the key file's.
    let below: Vec<PathBuf> = dir
        .strip_prefix(&home)
        .with_context(|| format!("{} is not under {}", path.display(), account.home.display()))?
        .components()
        .scan(home.clone(), |at, c| {
            at.push(c);
            Some(at.clone())
        })
        .collect();
    for d in below {
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                bail!(
                    "{} is a symlink or not a directory: refusing to write keys through it",
                    d.display()
                )
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(SSH_DIR_MODE))
            .with_context(|| format!("setting the mode of {}", d.display()))?;
        std::os::unix::fs::lchown(&d, Some(account.uid), Some(account.gid))
            .with_context(|| format!("giving {} to {}", d.display(), account.name))?;
    }
    if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symlink: refusing to write keys through it",
            file.display()
        );
    }
    fsutil::write_if_changed(&file, contents.as_bytes(), KEYS_MODE)
        .with_context(|| format!("writing {}", path.display()))?;
    std::os::unix::fs::lchown(&file, Some(account.uid), Some(account.gid))
        .with_context(|| format!("giving {} to {}", file.display(), account.name))?;
    Ok(())
}

/// Runs `program` to its end; a non-zero exit is an error with its last line.
fn run(program: Program, what: &str) -> Result<()> {
    let out = program
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            subprocess::last_line_of(&out)
        );
    }
    Ok(())
}

/// The groups of [`ADMIN_GROUPS`] the node has (for doctor).
pub fn admin_groups_on(facts: &UserFacts) -> BTreeSet<String> {
    ADMIN_GROUPS
        .iter()
        .filter(|g| facts.groups.contains(**g))
        .map(|g| g.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::imds::{OsProfile, PublicKey};

    fn compute(user: &str, host: &str, keys: &[(&str, &str)]) -> Compute {
        Compute {
            vm_id: "vm".into(),
            name: host.into(),
            location: String::new(),
            tags_list: Vec::new(),
            os_profile: OsProfile {
                admin_username: user.into(),
                computer_name: host.into(),
                disable_password_authentication: "true".into(),
            },
            public_keys: keys
                .iter()
                .map(|(k, p)| PublicKey {
                    key_data: k.to_string(),
                    path: p.to_string(),
                })
                .collect(),
        }
    }

    fn converged(desired: &Desired) -> Observed {
        Observed {
            user: UserFacts {
                account: Some(Account {
                    name: desired.user.clone(),
                    uid: 1000,
                    gid: 1000,
                    home: PathBuf::from("/home").join(&desired.user),
                }),
                member_of: ["adm", "sudo"].map(String::from).into(),
                groups: ["adm", "sudo", "root"].map(String::from).into(),
                password_locked: true,
            },
            home_present: true,
            sudoers_current: Some(true),
            keys: desired
                .keys
                .keys()
                .map(|p| {
                    (
                        p.clone(),
                        KeysFile {
                            current: true,
                            owned: true,
                        },
                    )
                })
                .collect(),
            hostname: desired.hostname.clone(),
            host_keys: HostKeys::Missing(Vec::new()),
            sshd_config: sshd::Config::DropIn(true),
            root_fs: Err("sandbox".into()),
        }
    }

    #[test]
    fn a_new_vm_needs_everything_and_a_converged_one_nothing() {
        let desired = Desired::from_metadata(&compute(
            "ops",
            "cp-01",
            &[
                ("ssh-ed25519 AAAA a", "/home/ops/.ssh/authorized_keys"),
                ("ssh-ed25519 BBBB b", "/home/ops/.ssh/authorized_keys"),
            ],
        ))
        .unwrap();
        assert_eq!(
            desired.keys[Path::new("/home/ops/.ssh/authorized_keys")],
            "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b\n"
        );
        let seen = converged(&desired);
        assert_eq!(decide(&desired, &seen).unwrap().tasks, []);
        let mut homeless = seen.clone();
        homeless.home_present = false;
        assert_eq!(
            decide(&desired, &homeless).unwrap().tasks,
            [Task::CreateHome]
        );

        let mut fresh = seen.clone();
        fresh.user.account = None;
        fresh.user.member_of.clear();
        fresh.sudoers_current = Some(false);
        fresh.keys.clear();
        fresh.hostname = "localhost".into();
        fresh.host_keys = HostKeys::Missing(vec!["ed25519"]);
        fresh.sshd_config = sshd::Config::DropIn(false);
        let tasks = decide(&desired, &fresh).unwrap().tasks;
        assert_eq!(
            tasks,
            [
                Task::CreateUser {
                    groups: vec!["adm".into(), "sudo".into()]
                },
                Task::CreateHome,
                Task::WriteSudoers,
                Task::WriteKeys("/home/ops/.ssh/authorized_keys".into()),
                Task::SetHostname,
                Task::GenerateHostKeys(vec!["ed25519"]),
                Task::WriteSshdConfig,
            ]
        );
    }

    #[test]
    fn drift_is_repaired_and_what_cannot_be_done_is_noted() {
        let desired = Desired::from_metadata(&compute(
            "ops",
            "cp-01",
            &[("k", "/home/ops/.ssh/authorized_keys")],
        ))
        .unwrap();
        let mut seen = converged(&desired);
        seen.user.password_locked = false;
        seen.user.member_of.remove("sudo");
        seen.keys.values_mut().for_each(|k| k.owned = false);
        seen.sudoers_current = None;
        seen.host_keys = HostKeys::NoSsh("sshd is not installed");
        seen.sshd_config = sshd::Config::NotIncluded("no Include".into());
        let d = decide(&desired, &seen).unwrap();
        assert_eq!(
            d.tasks,
            [
                Task::AddToGroups(vec!["sudo".into()]),
                Task::LockPassword,
                Task::WriteKeys("/home/ops/.ssh/authorized_keys".into()),
            ]
        );
        assert_eq!(d.notes.len(), 4, "{:?}", d.notes);
        seen.sshd_config = sshd::Config::NoSshd;
        assert_eq!(decide(&desired, &seen).unwrap().notes.len(), 3);
    }

    #[test]
    fn host_keys_the_unit_makes_are_not_made_twice() {
        let desired = Desired::from_metadata(&compute("ops", "cp-01", &[])).unwrap();
        let mut seen = converged(&desired);
        seen.host_keys = HostKeys::LeftToUnit(vec!["rsa", "ed25519"]);
        let d = decide(&desired, &seen).unwrap();
        assert_eq!(d.tasks, []);
        assert_eq!(
            d.notes[0],
            "SSH host keys rsa,ed25519 missing: canarie-ssh-host-keys.service makes them \
             before sshd starts, beside the bootstrap"
        );
        assert_eq!(d.notes[1..], ["sandbox"], "the root filesystem's note");
    }

    #[test]
    fn refusals_name_the_value_and_the_fix() {
        for (user, host, why) in [
            ("root", "cp-01", "adminUsername \"root\""),
            ("a:b", "cp-01", "adminUsername"),
            ("ops", "bad_host", "computerName \"bad_host\""),
            ("ops", "", "computerName"),
        ] {
            let err = Desired::from_metadata(&compute(user, host, &[])).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#}");
        }
        let two_lines = compute(
            "ops",
            "cp-01",
            &[("k\nops ALL", "/home/ops/.ssh/authorized_keys")],
        );
        assert!(Desired::from_metadata(&two_lines).is_err());

        let outside = Desired::from_metadata(&compute(
            "ops",
            "cp-01",
            &[("k", "/root/.ssh/authorized_keys")],
        ))
        .unwrap();
        let err = decide(&outside, &converged(&outside)).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not under the admin user's home"),
            "{err:#}"
        );
        let mut system = converged(&outside);
        system.user.account.as_mut().unwrap().uid = 1;
        let desired = Desired::from_metadata(&compute("ops", "cp-01", &[])).unwrap();
        let err = decide(&desired, &system).unwrap_err();
        assert!(format!("{err:#}").contains("system account"), "{err:#}");
        assert!(sudoers_contents("ops").ends_with("\nops ALL=(ALL) NOPASSWD:ALL\n"));
    }
}
