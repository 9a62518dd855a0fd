//! The node's accounts as the files under the root say: /etc/passwd, /etc/group and
//! /etc/shadow (read, never written here: `useradd`/`usermod` write them, with their locks).

use crate::paths::Root;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// What the account files say about one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    pub account: Option<Account>,
    /// Supplementary groups the user is a member of.
    pub member_of: BTreeSet<String>,
    /// Every group the node has.
    pub groups: BTreeSet<String>,
    /// The password cannot be used: its hash starts with `!` or `*` (or there is none).
    pub password_locked: bool,
}

/// Reads `file` under `root`; a missing file is empty (a bare sandbox).
fn read(root: &Root, file: &str) -> Result<String> {
    let path = root.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The user `name` as the account files under `root` describe it.
pub fn observe(root: &Root, name: &str) -> Result<UserFacts> {
    let passwd = read(root, "/etc/passwd")?;
    let group = read(root, "/etc/group")?;
    let shadow = read(root, "/etc/shadow")?;
    Ok(parse(name, &passwd, &group, &shadow))
}

/// The pure part of [`observe`].
pub fn parse(name: &str, passwd: &str, group: &str, shadow: &str) -> UserFacts {
    let fields = |line: &str| line.split(':').map(str::to_string).collect::<Vec<_>>();
    let mut facts = UserFacts::default();
    let mut passwd_hash = None;
    for f in passwd.lines().map(fields) {
        if f.len() >= 7 && f[0] == name {
            if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                facts.account = Some(Account {
                    name: name.to_string(),
                    uid,
                    gid,
                    home: PathBuf::from(&f[5]),
                });
                passwd_hash = Some(f[1].clone());
            }
        }
    }
    for f in group.lines().map(fields) {
        if f.len() >= 4 {
            if f[3].split(',').any(|m| m == name) {
                facts.member_of.insert(f[0].clone());
            }
            facts.groups.insert(f[0].clone());
        }
    }
    let hash = shadow
        .lines()
        .map(fields)
        .find(|f| f.len() >= 2 && f[0] == name)
        .map(|f| f[1].clone())
        // Without a shadow entry the hash is passwd's own field ("x" means: in shadow).
        .or(passwd_hash.filter(|h| h != "x"));
    facts.password_locked = hash.is_none_or(|h| h.starts_with('!') || h.starts_with('*'));
    facts
}

/// A name `useradd` takes and that is safe in a sudoers line: Debian's default
/// `NAME_REGEX` plus upper case (Azure allows it), at most 32 characters.
pub fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= 32 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// True when `path` is `home` or below it, with no `.`/`..` component that could lead out.
pub fn is_under(path: &Path, home: &Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.starts_with(home)
        && path != home
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nazureuser:x:1000:1000::/home/azureuser:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:syslog,azureuser\nsudo:x:27:\nazureuser:x:1000:\n";

    #[test]
    fn reads_the_user_its_groups_and_whether_its_password_is_locked() {
        let facts = parse(
            "azureuser",
            PASSWD,
            GROUP,
            "azureuser:!:19000:0:99999:7:::\n",
        );
        let account = facts.account.unwrap();
        assert_eq!((account.uid, account.gid), (1000, 1000));
        assert_eq!(account.home, Path::new("/home/azureuser"));
        assert_eq!(facts.member_of, BTreeSet::from(["adm".to_string()]));
        assert!(facts.groups.contains("sudo"));
        assert!(facts.password_locked);
        let open = parse(
            "azureuser",
            PASSWD,
            GROUP,
            "azureuser:$6$salt$hash:19000::::::\n",
        );
        assert!(!open.password_locked);
        let missing = parse("someone", PASSWD, GROUP, "");
        assert_eq!(missing.account, None);
    }

    #[test]
    fn names_and_paths_that_could_escape_are_refused() {
        assert!(valid_user_name("azureuser"));
        assert!(valid_user_name("Ops_Admin-2"));
        for bad in [
            "",
            "1abc",
            "-x",
            "a b",
            "a:b",
            "a\nALL",
            "x".repeat(33).as_str(),
        ] {
            assert!(!valid_user_name(bad), "{bad:?}");
        }
        let home = Path::new("/home/azureuser");
        assert!(is_under(
            Path::new("/home/azureuser/.ssh/authorized_keys"),
            home
        ));
        assert!(!is_under(
            Path::new("/home/azureuser/../root/.ssh/authorized_keys"),
            home
        ));
        assert!(!is_under(
            Path::new("/home/azureuserx/.ssh/authorized_keys"),
            home
        ));
        assert!(!is_under(Path::new("/root/.ssh/authorized_keys"), home));
        assert!(!is_under(home, home));
    }
}
