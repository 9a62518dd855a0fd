//! A `--root` sandbox node: azure-sim for IMDS and Key Vault, a fake systemd on a private
//! bus, and the real `canarie-agent` binary run against them.

use super::dbus::FakeSystemd;
use super::sim::{scenario, TestSim, JOIN_TOKEN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

pub const BIN: &str = env!("CARGO_BIN_EXE_canarie-agent");

pub fn server_config() -> Value {
    json!({
        "version": 1,
        "role": "server",
        "node_name": "cp-01",
        "cluster": {
            "tls_san": ["cp-01"],
            "public_ip": "20.30.40.50",
            "storage_nodes": 2,
            "git_repo": {"url": "https://github.com/example/canarie", "branch": "main"}
        },
        "join_token": {"vault": "kv-canarie", "secret": "rke2-join-token", "rbac_wait_seconds": 5}
    })
}

pub fn agent_config() -> Value {
    json!({
        "version": 1,
        "role": "agent",
        "node_name": "wk-01",
        "cluster": {"server_url": "https://10.20.0.4:9345"},
        "join_token": {"vault": "kv-canarie", "secret": "rke2-join-token", "rbac_wait_seconds": 5}
    })
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub sim: TestSim,
    pub systemd: FakeSystemd,
}

/// What one run of the binary printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails the test, showing what the run printed, unless it exited 0.
    pub fn assert_success(&self) {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }

    /// Fails the test if the join token appears in anything the run printed.
    pub fn assert_no_secret(&self) {
        assert!(
            !self.stdout.contains(JOIN_TOKEN),
            "join token in stdout:\n{}",
            self.stdout
        );
        assert!(
            !self.stderr.contains(JOIN_TOKEN),
            "join token in stderr:\n{}",
            self.stderr
        );
    }
}

impl Sandbox {
    /// A node whose IMDS userData holds `config`.
    pub async fn new(config: Value) -> Sandbox {
        let sim = TestSim::start(scenario(json!({ "user_data_json": config }))).await;
        Sandbox::with_sim(sim).await
    }

    pub async fn with_sim(sim: TestSim) -> Sandbox {
        Sandbox::with_sim_in(sim, &std::env::temp_dir()).await
    }

    /// A sandbox whose root is a new directory inside `parent` (a disk lab, which unmounts
    /// everything under it when dropped).
    pub async fn with_sim_in(sim: TestSim, parent: &Path) -> Sandbox {
        let dir = tempfile::tempdir_in(parent).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/machine-id"),
            "5c2b1a0e9d8f4e7a8b6c5d4e3f2a1b0c\n",
        )
        .unwrap();
        super::seed_accounts(dir.path());
        let systemd = FakeSystemd::start().await;
        Sandbox { dir, sim, systemd }
    }

    /// The node config userData serves from now on (OpenTofu changing it in place).
    pub fn set_config(&self, config: &Value) {
        use base64::Engine as _;
        self.sim.sim.set_user_data(Some(
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(config).unwrap()),
        ));
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root().join(node_path.trim_start_matches('/'))
    }

    /// Runs `canarie-agent ARGS` against this sandbox's simulator and bus.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[]).await
    }

    pub async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = tokio::process::Command::from(self.command(args));
        let out = cmd
            .envs(env.iter().copied())
            .output()
            .await
            .expect("the canarie-agent binary runs");
        Run::from_output(out)
    }

    /// `canarie-agent ARGS` with this sandbox's root, simulator, CA, bus and short deadlines.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .arg("--root")
            .arg(self.root())
            .args([
                "--imds-url",
                &self.sim.sim.imds_url(),
                "--vault-url",
                &self.sim.sim.vault_url(),
            ])
            .arg("--ca-file")
            .arg(&self.sim.ca_file)
            .args(["--dbus-address", &self.systemd.address])
            .args([
                "--imds-deadline",
                "8",
                "--vault-deadline",
                "8",
                "--fallback-deadline",
                "2",
                "--rke2-start-timeout",
                "10",
            ])
            .env_remove("JOURNAL_STREAM")
            .env("CANARIE_LOG", "info");
        cmd
    }

    /// Every file under the root with its bytes and mode, for before/after comparisons.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>, u32, std::time::SystemTime)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let meta = std::fs::symlink_metadata(entry.path()).unwrap();
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if meta.is_file() {
                    out.push((
                        entry.path(),
                        std::fs::read(entry.path()).unwrap(),
                        meta.permissions().mode(),
                        meta.modified().unwrap(),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// The node paths (`/etc/...`) whose bytes, mode or mtime differ from `before`, an
    /// earlier [`Sandbox::snapshot`]; the agent's state file, which every run rewrites,
    /// aside. A file that appeared or vanished fails the test.
    pub fn changed_since(
        &self,
        before: &[(PathBuf, Vec<u8>, u32, std::time::SystemTime)],
    ) -> Vec<String> {
        let after = self.snapshot();
        let paths = |files: &[(PathBuf, Vec<u8>, u32, std::time::SystemTime)]| {
            files.iter().map(|f| f.0.clone()).collect::<Vec<_>>()
        };
        assert_eq!(paths(&after), paths(before), "files appeared or vanished");
        after
            .iter()
            .zip(before)
            // The state and the metrics (its run timestamp) are rewritten by every run.
            .filter(|(a, b)| {
                a != b && !a.0.ends_with("state.json") && !a.0.ends_with("canarie_agent.prom")
            })
            .map(|(a, _)| {
                let node_path = a.0.strip_prefix(self.root()).expect("under the root");
                format!("/{}", node_path.display())
            })
            .collect()
    }

    /// Runs `bootstrap` again on a converged node: it must succeed, say it changed nothing,
    /// and rewrite no file (see [`Sandbox::changed_since`]). The run, for further checks.
    pub async fn assert_rerun_changes_nothing(&self) -> Run {
        let before = self.snapshot();
        let again = self.run(&["bootstrap"]).await;
        again.assert_success();
        assert!(
            again
                .stdout
                .contains("bootstrap: converged, nothing changed"),
            "{}",
            again.stdout
        );
        assert_eq!(
            self.changed_since(&before),
            Vec::<String>::new(),
            "rewritten on a converged node"
        );
        again
    }
}
