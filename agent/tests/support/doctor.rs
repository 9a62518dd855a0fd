//! `canarie-agent doctor` against a sandbox: the real binary with the sandbox's root,
//! simulator and bus (optionally as an unprivileged user), its JSON report parsed.

use super::sandbox::{Sandbox, BIN};
use super::sim::JOIN_TOKEN;
use canarie_agent::doctor::{NO_PROXY_VARS, PROXY_VARS};
use serde_json::Value;
use std::time::Duration;

/// How one doctor run is made.
#[derive(Default)]
pub struct DoctorArgs {
    /// Replaces the simulator's IMDS URL (a closed port: IMDS down).
    pub imds_url: Option<String>,
    /// Run as uid/gid 65534 through setpriv: a real unprivileged process.
    pub as_nobody: bool,
    pub env: Vec<(String, String)>,
    /// Human text instead of `--json`.
    pub text: bool,
    /// More arguments (e.g. `--config FILE`).
    pub args: Vec<String>,
}

pub struct DoctorRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The parsed report of a `--json` run.
    pub json: Value,
}

impl DoctorRun {
    /// The report's entry for check `id`.
    pub fn check(&self, id: &str) -> &Value {
        self.json["checks"]
            .as_array()
            .expect("the report has checks")
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in:\n{}", self.stdout))
    }

    /// Asserts check `id` has `status`, a finding containing `finding` and, when given, a
    /// hint containing `hint`.
    pub fn assert_check(&self, id: &str, status: &str, finding: &str, hint: Option<&str>) {
        let c = self.check(id);
        assert_eq!(c["status"], status, "check {id}: {c:#}");
        let f = c["finding"].as_str().unwrap_or_default();
        assert!(
            f.contains(finding),
            "check {id} finding lacks {finding:?}: {f}"
        );
        if let Some(hint) = hint {
            let h = c["hint"].as_str().unwrap_or_default();
            assert!(h.contains(hint), "check {id} hint lacks {hint:?}: {h}");
        }
    }

    pub fn status(&self, id: &str) -> String {
        self.check(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs `canarie-agent doctor` against `sb`. Every run is checked for the join token: it
/// must never appear on stdout or stderr.
pub async fn doctor(sb: &Sandbox, args: DoctorArgs) -> DoctorRun {
    let mut cmd = if args.as_nobody {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        tokio::process::Command::new(BIN)
    };
    let imds = args
        .imds_url
        .clone()
        .unwrap_or_else(|| sb.sim.sim.imds_url());
    cmd.arg("doctor")
        .args(if args.text { None } else { Some("--json") })
        .arg("--root")
        .arg(sb.root())
        .args(["--imds-url", &imds, "--vault-url", &sb.sim.sim.vault_url()])
        .arg("--ca-file")
        .arg(&sb.sim.ca_file)
        .args(["--dbus-address", &sb.systemd.address])
        .args(&args.args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("CANARIE_LOG")
        .env_remove("NO_COLOR");
    // The test's own proxy settings must not leak in; a test sets them explicitly.
    for var in PROXY_VARS.iter().chain(NO_PROXY_VARS) {
        cmd.env_remove(var);
    }
    cmd.envs(args.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // Safety net only: doctor has its own deadlines (docs/operations.md gives the figures).
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("doctor finished within 20 s")
        .expect("the canarie-agent binary runs");
    let run = DoctorRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        json: Value::Null,
    };
    if std::env::var_os("CANARIE_TEST_SHOW_DOCTOR").is_some() {
        eprintln!(
            "--- doctor stdout:\n{}--- doctor stderr:\n{}",
            run.stdout, run.stderr
        );
    }
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(!text.contains(JOIN_TOKEN), "join token in {name}:\n{text}");
    }
    if args.text {
        return run;
    }
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}):\n{}\n{}",
            run.stdout, run.stderr
        )
    });
    DoctorRun { json, ..run }
}
