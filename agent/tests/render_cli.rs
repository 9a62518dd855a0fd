//! `canarie-agent render` as a user runs it: the real binary, real files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_canarie-agent");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn render(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("render")
        .args(args)
        .env_remove("CANARIE_CONFIG")
        .env_remove("CANARIE_ROOT")
        .output()
        .expect("running canarie-agent")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn renders_the_node_files_and_prints_each_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = render(&[
        "--config",
        example("agent.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut printed: Vec<PathBuf> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    printed.sort();
    assert_eq!(printed, files_under(&out), "prints exactly what it wrote");

    let config = std::fs::read_to_string(out.join("etc/rancher/rke2/config.yaml")).unwrap();
    assert!(
        config.contains("server: \"https://10.20.0.4:9345\"\n"),
        "{config}"
    );
    let token = out.join("etc/rancher/rke2/config.yaml.d/10-token.yaml");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(std::fs::read_to_string(&token)
        .unwrap()
        .contains("token: \"REDACTED"));
}

#[test]
fn an_invalid_config_is_one_line_exit_1_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example("server.json")).unwrap()).unwrap();
    config["cluster"]["public_ip"] = "not-an-ip".into();
    std::fs::write(&bad, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = dir.path().join("out");
    let o = render(&[
        "--config",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cluster.public_ip"), "{stderr}");
    assert!(o.stdout.is_empty());
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn without_a_config_it_says_how_to_call_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = render(&["--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(stderr.contains("--config FILE"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
