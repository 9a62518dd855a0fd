//! The steps, in order: config → provisioning → (join token ∥ data disk ∥ server state disk) →
//! RKE2 config → server manifests → cluster secrets → node password → start RKE2.
//!
//! [`StepId`] is the table of steps: each step's name, exit code and explanations are written
//! once, in [`StepId::info`]. The report, the node state, the failure line, doctor and the
//! README's exit-code table (checked by a test) all derive from it. docs/architecture.md,
//! "How to add a step", says what else a new step needs.

pub mod cluster_secrets;
pub mod config;
pub mod disk;
pub mod files;
pub mod join_token;
pub mod node_password;
pub mod provisioning;
pub mod start;

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepId {
    Config,
    Provisioning,
    JoinToken,
    DataDisk,
    ServerStateDisk,
    Rke2Config,
    ServerManifests,
    ClusterSecrets,
    NodePassword,
    StartRke2,
}

/// What the rest of the agent knows about a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInfo {
    /// Its name in logs (the journal field `F_STEP`), reports, the node state and the docs.
    pub name: &'static str,
    /// The exit code of a `bootstrap` or `plan` that fails in this step (the README's table).
    pub exit_code: i32,
    /// What to do when it fails, in one line: the end of the run's failure line.
    pub hint: &'static str,
    /// What it does, so that doctor's explanation of its failure reads as a consequence.
    pub does: &'static str,
}

/// The two file steps fail the same way.
const FILES_HINT: &str = "check free space and permissions under /etc/rancher and /var/lib/rancher";
/// Both file steps end a run with this code: a file could not be written.
const FILES_EXIT_CODE: i32 = 6;
/// Both disk steps end a run with this code: a disk is missing or was refused.
const DISK_EXIT_CODE: i32 = 5;

impl StepId {
    /// Every step, in run order.
    pub const ALL: [StepId; 10] = [
        StepId::Config,
        StepId::Provisioning,
        StepId::JoinToken,
        StepId::DataDisk,
        StepId::ServerStateDisk,
        StepId::Rke2Config,
        StepId::ServerManifests,
        StepId::ClusterSecrets,
        StepId::NodePassword,
        StepId::StartRke2,
    ];

    /// The table: one row per step.
    pub const fn info(self) -> StepInfo {
        match self {
            StepId::Config => StepInfo {
                name: "config",
                exit_code: 3,
                hint: "fix the node config (user_data in infra-tofu, or --config FILE) and run again",
                does: "reads the node config",
            },
            StepId::Provisioning => StepInfo {
                name: "provisioning",
                exit_code: 9,
                hint: "check the VM's osProfile and publicKeys (admin_username, computer_name, SSH keys in infra-tofu) and `canarie-agent doctor`",
                does: "provisions the VM from IMDS: admin user, SSH keys, hostname, SSH host keys, root filesystem grown",
            },
            StepId::JoinToken => StepInfo {
                name: "join-token",
                exit_code: 4,
                hint: "check the VM's managed identity, its 'Key Vault Secrets User' role and the secret; `canarie-agent doctor` shows which",
                does: "reads the join token from Key Vault and writes the token file",
            },
            StepId::DataDisk => StepInfo {
                name: "data-disk",
                exit_code: DISK_EXIT_CODE,
                hint: "run `canarie-agent disk inspect DEVICE` to see what is on the disk; nothing was written to it",
                does: "finds, formats (only when blank) and mounts the data disk",
            },
            StepId::ServerStateDisk => StepInfo {
                name: "server-state-disk",
                exit_code: DISK_EXIT_CODE,
                hint: "RKE2 was not started: a server without its state would start an empty etcd. Attach the server's state disk at server_state_disk.lun (infra-tofu), or run `canarie-agent disk inspect DEVICE --mount-point /var/lib/rancher/rke2/server --label rke2-server` to see what is on it; nothing was written to it",
                does: "finds, formats (only when blank) and mounts the server state disk (etcd, certificates, token)",
            },
            StepId::Rke2Config => StepInfo {
                name: "rke2-config",
                exit_code: FILES_EXIT_CODE,
                hint: FILES_HINT,
                does: "writes RKE2's config files",
            },
            StepId::ServerManifests => StepInfo {
                name: "server-manifests",
                exit_code: FILES_EXIT_CODE,
                hint: FILES_HINT,
                does: "seeds the server's manifests",
            },
            StepId::ClusterSecrets => StepInfo {
                name: "cluster-secrets",
                exit_code: 8,
                hint: "create the named secret in the vault (infra-tofu keyvault.tf) or fix cluster_secrets in the node config; the VM's identity needs 'Key Vault Secrets User' on it",
                does: "reads cluster_secrets from Key Vault and seeds them as Secret manifests",
            },
            StepId::NodePassword => StepInfo {
                name: "node-password",
                exit_code: FILES_EXIT_CODE,
                hint: "check free space and permissions under /etc/rancher/node and on the persistent disk (its .canarie directory)",
                does: "restores RKE2's node password from the persistent disk, or saves it there",
            },
            StepId::StartRke2 => StepInfo {
                name: "start-rke2",
                exit_code: 7,
                hint: "see `journalctl -u rke2-server -u rke2-agent` and `canarie-agent doctor`",
                does: "starts the RKE2 unit and waits for it",
            },
        }
    }

    pub const fn name(self) -> &'static str {
        self.info().name
    }

    pub const fn exit_code(self) -> i32 {
        self.info().exit_code
    }

    /// The step of this name; `None` for a name this binary does not know (a node state
    /// written by another agent version).
    pub fn from_name(name: &str) -> Option<StepId> {
        StepId::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl serde::Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Step names, in run order.
pub const STEP_NAMES: &[&str] = &{
    let mut names = [""; StepId::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = StepId::ALL[i].name();
        i += 1;
    }
    names
};

/// Every exit code a failed step ends a run with, each once, in ascending order.
pub fn failure_exit_codes() -> Vec<i32> {
    let mut codes: Vec<i32> = StepId::ALL.iter().map(|s| s.exit_code()).collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_codes_are_not_the_commands_own() {
        for (i, step) in StepId::ALL.iter().enumerate() {
            assert_eq!(StepId::from_name(step.name()), Some(*step));
            assert_eq!(STEP_NAMES[i], step.name());
            assert!(
                !StepId::ALL[..i].iter().any(|s| s.name() == step.name()),
                "{step} twice"
            );
            // 0 converged, 1 and 2 are every command's own (cli::exit).
            assert!(step.exit_code() > 2, "{step}: {}", step.exit_code());
            assert!(!step.info().hint.is_empty() && !step.info().does.is_empty());
        }
        assert_eq!(StepId::from_name("no-such-step"), None);
        assert_eq!(
            serde_json::to_string(&StepId::ClusterSecrets).unwrap(),
            "\"cluster-secrets\""
        );
    }
}
