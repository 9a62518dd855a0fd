//! The `azure-sim` binary: ready file, CA file, SIGTERM, and refusing bad input.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{client_trusting, Endpoints};

const BIN: &str = env!("CARGO_BIN_EXE_azure-sim");

async fn wait_for(path: &Path, child: &mut std::process::Child) -> Value {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).expect("the ready file is complete JSON");
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("azure-sim exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("azure-sim did not write {}", path.display());
}

#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.json");
    std::fs::write(&scenario, r#"{"secrets": {"join-token": {"value": "v1"}}}"#).unwrap();
    let ready = dir.path().join("ready.json");
    let log = dir.path().join("requests.jsonl");
    let mut child = Command::new(BIN)
        .arg("--scenario")
        .arg(&scenario)
        .arg("--ca-out")
        .arg(dir.path().join("ca.pem"))
        .arg("--request-log")
        .arg(&log)
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let info = wait_for(&ready, &mut child).await;
    assert_eq!(info["pid"], child.id());
    let azure = Endpoints {
        http: client_trusting(&std::fs::read(info["ca_file"].as_str().unwrap()).unwrap()),
        imds_url: info["imds_url"].as_str().unwrap().to_string(),
        vault_url: info["vault_url"].as_str().unwrap().to_string(),
    };
    assert!(azure.imds_url.starts_with("http://127.0.0.1:"));
    assert!(azure.vault_url.starts_with("https://127.0.0.1:"));
    let wireserver = info["wireserver_url"].as_str().unwrap();
    let versions = azure
        .http
        .get(format!("{wireserver}/?comp=versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(versions.status(), 200);

    let token = azure.token().await;
    let secret = azure
        .vault("/secrets/join-token/?api-version=2026-04-01", Some(&token))
        .await;
    assert_eq!(secret.status, 200, "{}", secret.text);
    assert_eq!(secret.json()["value"], "v1");

    // The shell's builtin kill: no procps needed on a minimal machine.
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !ready.exists(),
        "the ready file goes away with the simulator"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3);
}

fn run_expecting_failure(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(args)
        .arg("--ca-out")
        .arg(dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    stderr
}

#[test]
fn binary_refuses_non_loopback_and_bad_scenarios() {
    let stderr = run_expecting_failure(&["--imds-listen", "0.0.0.0:8080"]);
    assert!(stderr.contains("loopback"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.json");
    std::fs::write(
        &scenario,
        r#"{"rules": [{"preset": "kv_404", "times": 0}]}"#,
    )
    .unwrap();
    let stderr = run_expecting_failure(&["--scenario", scenario.to_str().unwrap()]);
    assert!(
        stderr.contains("bad.json") && stderr.contains("times"),
        "{stderr}"
    );

    let stderr = run_expecting_failure(&["--scenario", "/nonexistent/scenario.json"]);
    assert!(stderr.contains("cannot read scenario file"), "{stderr}");
}
