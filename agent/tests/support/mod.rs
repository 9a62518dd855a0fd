//! Shared helpers of the integration tests (each test file uses a part of them).
#![allow(dead_code)]

pub mod dbus;
pub mod doctor;
pub mod examples;
pub mod journal;
pub mod sandbox;
pub mod sim;

/// `sh -c SCRIPT sh ARGS...` (add the ARGS) in a new mount namespace with private
/// propagation (`unshare --mount`): what the script mounts is seen by it and its children
/// only, and goes away with them. Needs root.
pub fn in_mount_namespace(script: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]);
    cmd
}

/// The account files of a fresh Debian image in the sandbox root `root` (/etc/passwd,
/// group, shadow, gshadow, an empty /home and /etc/sudoers.d), so that the provisioning
/// step's `useradd --prefix ROOT` works on it as on a node. No /etc/ssh: a sandbox without
/// sshd skips the host keys (the provisioning tests add sshd_config where they test them).
pub fn seed_accounts(root: &std::path::Path) {
    use std::fs;
    for dir in ["etc/sudoers.d", "home"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let groups = ["root:0", "adm:4", "sudo:27", "users:100"];
    let group: String = groups
        .iter()
        .map(|g| {
            let (name, gid) = g.split_once(':').unwrap();
            format!("{name}:x:{gid}:\n")
        })
        .collect();
    let gshadow: String = groups
        .iter()
        .map(|g| format!("{}:*::\n", g.split_once(':').unwrap().0))
        .collect();
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\n".to_string(),
            0o644,
        ),
        ("etc/group", group, 0o644),
        (
            "etc/shadow",
            "root:*:19000:0:99999:7:::\n".to_string(),
            0o640,
        ),
        ("etc/gshadow", gshadow, 0o640),
    ];
    for (path, contents, mode) in files {
        let path = root.join(path);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(
            &path,
            <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
        )
        .unwrap();
    }
}
