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
