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

/// Renders examples/server.json, edited, into `dir`/out; returns the output and that directory.
fn render_server(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> (Output, PathBuf) {
    let file = dir.join("server.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example("server.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = dir.join("out");
    let o = render(&[
        "--config",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    (o, out)
}

/// The command refused the config: one line on stderr naming `path`, exit 1, nothing written.
fn assert_refused(o: &Output, out: &Path, path: &str) -> String {
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(path), "{stderr}");
    assert!(o.stdout.is_empty());
    assert!(!out.exists(), "nothing may be written");
    stderr
}

#[test]
fn an_invalid_config_is_one_line_exit_1_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = render_server(dir.path(), |c| {
        c["cluster"]["public_ip"] = "not-an-ip".into()
    });
    assert_refused(&o, &out, "cluster.public_ip");
}

#[test]
fn a_custom_longhorn_data_path_reaches_the_chart_and_the_mount_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = render_server(dir.path(), |c| {
        c["cluster"]["longhorn_data_path"] = "/srv/longhorn".into();
        c["data_disk"] = serde_json::json!({"lun": 0, "mount_point": "/srv/longhorn"});
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (file, line) in [
        (
            "var/lib/rancher/rke2/server/manifests/canarie-longhorn.yaml",
            "\n    defaultSettings.defaultDataPath: \"/srv/longhorn\"\n",
        ),
        (
            "etc/systemd/system/rke2-server.service.d/10-canarie-data-disk.conf",
            "\nRequiresMountsFor=/srv/longhorn\n",
        ),
    ] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(text.contains(line), "{file}:\n{text}");
    }
}

#[test]
fn a_data_disk_away_from_longhorns_data_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = render_server(dir.path(), |c| {
        c["data_disk"] = serde_json::json!({"lun": 0, "mount_point": "/srv/longhorn"});
    });
    let stderr = assert_refused(&o, &out, "data_disk.mount_point: is /srv/longhorn");
    assert!(
        stderr.contains("cluster.longhorn_data_path is /var/lib/longhorn"),
        "{stderr}"
    );
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

/// `config validate` and `render` run one validation: for each config the node would
/// refuse at start (and the label the agent sets itself), both exit 1 with the same line,
/// naming the field and the rule, and render writes nothing.
#[test]
fn config_validate_and_render_refuse_the_same_configs_with_the_same_line() {
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "node_labels[0]",
            serde_json::json!({"node_labels": ["node.longhorn.io/create-default-disk=true"]}),
            "is set by canarie-agent when the data disk is mounted",
        ),
        (
            "node_labels[0]",
            serde_json::json!({"node_labels": ["node-role.kubernetes.io/worker=true"]}),
            "--node-labels rule",
        ),
        (
            "node_labels[1]",
            serde_json::json!({"node_labels": ["pool=a", "pool=b"]}),
            "sets label pool again",
        ),
        (
            "node_taints[0]",
            serde_json::json!({"node_taints": ["dedicated=storage"]}),
            "--register-with-taints",
        ),
        (
            "node_taints[1]",
            serde_json::json!({"node_taints": ["k=a:NoSchedule", "k=b:NoSchedule"]}),
            "unique by key and effect",
        ),
    ];
    for (path, extra, rule) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(example("agent.json")).unwrap()).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        std::fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
        let out = dir.path().join("out");
        let rendered = render(&[
            "--config",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let line = assert_refused(&rendered, &out, &format!("{path}: "));
        assert!(line.contains(rule), "{line}");
        let validated = Command::new(BIN)
            .args(["config", "validate", file.to_str().unwrap()])
            .output()
            .expect("running canarie-agent");
        assert_eq!(validated.status.code(), Some(1));
        assert_eq!(String::from_utf8(validated.stderr).unwrap(), line);
    }
}

/// Every example node config in examples/ is one an operator may start from: each renders
/// (the same validation `bootstrap` runs, plus the files), not only `config validate`.
#[test]
fn every_example_config_renders() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "{examples:?}");
    for example in examples {
        let out = tempfile::tempdir().unwrap();
        let o = render(&[
            "--config",
            example.to_str().unwrap(),
            "--out",
            out.path().join("out").to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{}: {}",
            example.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
