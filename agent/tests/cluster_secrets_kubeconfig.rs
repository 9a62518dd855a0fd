//! `canarie-agent kubeconfig`: the real binary with a stand-in for ssh (`--ssh PROGRAM`), a
//! script that records its arguments and prints a fixture kubeconfig shaped like RKE2's
//! rke2.yaml. No SSH server is involved.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_canarie-agent");
/// The client key; it must never be printed.
const KEY_DATA: &str = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCmNhbmFyeS1rZXkK";
const FIXTURE: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmNhbmFyeS1jYQo=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmNhbmFyeS1jZXJ0Cg==
    client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCmNhbmFyeS1rZXkK
";

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    /// An ssh stand-in that records its arguments, then prints `stdout` and exits `code`.
    fn new(stdout: &str, code: i32) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("answer"), stdout).unwrap();
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{dir}/args'\ncat '{dir}/answer'\n[ {code} -eq 0 ] || echo 'ssh: connect to host: Connection refused' >&2\nexit {code}\n",
            dir = dir.path().display()
        );
        let ssh = dir.path().join("ssh");
        std::fs::write(&ssh, script).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn ssh(&self) -> PathBuf {
        self.dir.path().join("ssh")
    }

    fn args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("args"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("kube/canarie.yaml")
    }

    /// Runs the command under umask 000, so a mode that depended on the umask would show.
    fn run(&self, extra: &[&str]) -> Output {
        std::process::Command::new("sh")
            .args(["-c", "umask 000; exec \"$@\"", "sh", BIN, "kubeconfig"])
            .arg("--ssh")
            .arg(self.ssh())
            .arg("--out")
            .arg(self.out())
            .args(extra)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn fetches_rewrites_the_server_and_writes_0600_without_printing_credentials() {
    let fake = Fake::new(FIXTURE, 0);
    let run = fake.run(&["--ssh-port", "2200", "canarie@20.30.40.50"]);
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        fake.args(),
        [
            "-p",
            "2200",
            "--",
            "canarie@20.30.40.50",
            "sudo",
            "-n",
            "cat",
            "/etc/rancher/rke2/rke2.yaml"
        ]
    );
    let written = std::fs::read_to_string(fake.out()).unwrap();
    assert_eq!(
        written,
        FIXTURE.replace(
            "server: https://127.0.0.1:6443",
            "server: https://20.30.40.50:6443"
        ),
        "only the server line changes"
    );
    assert_eq!(mode(&fake.out()), 0o600);
    assert!(
        stdout.contains("server https://20.30.40.50:6443") && stdout.contains("export KUBECONFIG="),
        "{stdout}"
    );
    for out in [&stdout, &stderr] {
        assert!(
            !out.contains(KEY_DATA) && !out.contains("client-key"),
            "{out}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(fake.out().parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 1, "no temp file may remain");
}

#[test]
fn an_existing_file_is_replaced_and_narrowed_to_0600() {
    let fake = Fake::new(FIXTURE, 0);
    std::fs::create_dir_all(fake.out().parent().unwrap()).unwrap();
    std::fs::write(fake.out(), "old: kubeconfig\n").unwrap();
    std::fs::set_permissions(fake.out(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = fake.run(&["--api-server", "api.k8s.example.com", "canarie@20.30.40.50"]);
    assert_eq!(run.status.code(), Some(0), "{:?}", text(&run));
    let written = std::fs::read_to_string(fake.out()).unwrap();
    assert!(
        written.contains("    server: https://api.k8s.example.com:6443\n"),
        "{written}"
    );
    assert_eq!(mode(&fake.out()), 0o600);
}

#[test]
fn a_failed_ssh_writes_nothing_and_exits_2() {
    let fake = Fake::new("", 255);
    let run = fake.run(&["canarie@20.30.40.50"]);
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("Connection refused"),
        "ssh's message reaches the user: {stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("canarie-agent:"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(!fake.out().exists());
}

#[test]
fn an_answer_that_is_not_a_kubeconfig_is_refused_without_echoing_it() {
    // What a misconfigured sudo or a wrong file could send back, with a key inside.
    let fake = Fake::new(&format!("users:\n- {KEY_DATA}\n"), 0);
    let run = fake.run(&["canarie@20.30.40.50"]);
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("is not a kubeconfig"), "{stderr}");
    assert!(!stderr.contains(KEY_DATA) && !stdout.contains(KEY_DATA));
    assert!(!fake.out().exists());
}

#[test]
fn a_destination_ssh_would_read_as_an_option_is_refused_before_running_ssh() {
    let fake = Fake::new(FIXTURE, 0);
    let run = fake.run(&["--", "-oProxyCommand=touch /tmp/x"]);
    assert_eq!(run.status.code(), Some(1), "{:?}", text(&run));
    assert!(!fake.dir.path().join("args").exists(), "ssh was run");
}
