//! `canarie-agent doctor` in `--root` sandboxes: the real binary against azure-sim (real
//! sockets and TLS), a fake systemd on a private bus, real loop devices. One
//! sandbox per failing condition: the right check fails with the right hint, no output
//! carries a secret, a hung IMDS does not hang doctor.

mod disk_support;
mod support;

use disk_support::{sh, Lab, LinkScheme};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use support::dbus::StartOutcome;
use support::doctor::{doctor, DoctorArgs, DoctorRun};
use support::sandbox::{agent_config, server_config, Sandbox};
use support::sim::{rules, scenario, TestSim};

const TOKEN_FILE: &str = "/etc/rancher/rke2/config.yaml.d/10-token.yaml";

async fn bootstrap(sb: &Sandbox) {
    sb.run(&["bootstrap"]).await.assert_success();
}

/// A sandbox that looks like a healthy host besides what the test breaks: the kernel's BTF
/// file and an `rke2` of the release the agent is built for under the root.
async fn node(config: Value) -> Sandbox {
    node_with(scenario(json!({ "user_data_json": config }))).await
}

async fn node_with(scenario: azure_sim::Scenario) -> Sandbox {
    let sb = Sandbox::with_sim(TestSim::start(scenario).await).await;
    let btf = sb.path("/sys/kernel/btf/vmlinux");
    std::fs::create_dir_all(btf.parent().unwrap()).unwrap();
    std::fs::write(btf, b"BTF").unwrap();
    fake_rke2(&sb, canarie_agent::rke2::RKE2_VERSION);
    sb
}

/// `/usr/local/bin/rke2` answering `--version` the way RKE2 does.
fn fake_rke2(sb: &Sandbox, version: &str) {
    use std::os::unix::fs::PermissionsExt;
    let bin = sb.path("/usr/local/bin/rke2");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\necho 'rke2 version {version} (0123abcd)'\necho 'go version go1.26.5'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Bootstraps `sb`, which must fail with exit code `code`, then runs doctor, which must
/// fail too.
async fn doctor_after_failed_bootstrap(sb: &Sandbox, code: i32) -> DoctorRun {
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(run.code, code, "bootstrap:\n{}\n{}", run.stdout, run.stderr);
    let run = doctor(sb, json_run()).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    run
}

fn json_run() -> DoctorArgs {
    DoctorArgs::default()
}

/// An agent config whose server is `addr` (always a loopback address in these tests).
fn agent_for(addr: &str) -> Value {
    let mut config = agent_config();
    config["cluster"]["server_url"] = json!(format!("https://{addr}:9345"));
    config
}

/// A loopback address of its own for each test (127.0.0.0/8 is all loopback), so the
/// fixed RKE2 ports 9345 and 6443 can be bound without clashing with other tests.
fn private_loopback() -> String {
    format!(
        "127.{}.{}.{}",
        rand::random_range(1..=254u8),
        rand::random_range(1..=254u8),
        rand::random_range(2..=254u8)
    )
}

/// Unmounts a path on drop (before the sandbox's directory is removed).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

#[tokio::test]
async fn a_healthy_server_with_a_data_disk_is_all_ok_and_shows_no_secret() {
    let mut lab = Lab::new();
    let mut config = server_config();
    config["data_disk"] = json!({"lun": 0, "wait_seconds": 0});
    // A server with both disks: the state disk's checks are as ok as the data disk's.
    config["server_state_disk"] = json!({"lun": 1, "wait_seconds": 0});
    let sb = node(config).await;
    for (lun, name) in [(0, "disk.img"), (1, "state.img")] {
        let image = lab.image(name, disk_support::GIB);
        let dev = lab.attach(&image);
        Lab::link_lun(
            &canarie_agent::paths::Root::new(sb.root()),
            LinkScheme::ByLun,
            lun,
            &dev,
        );
    }
    let _unmount = Unmount(sb.path(disk_support::MOUNT_POINT));
    let _unmount_state = Unmount(sb.path("/var/lib/rancher/rke2/server"));
    bootstrap(&sb).await;

    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let ids: Vec<&str> = run.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = canarie_agent::doctor::CHECKS.iter().map(|s| s.id).collect();
    assert_eq!(ids, expected, "every check, in report order");
    for c in run.json["checks"].as_array().unwrap() {
        let mut fields: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, canarie_agent::doctor::CHECK_FIELDS);
    }
    // What a sandbox cannot have: the host's journal, a server to join (first server), a
    // WireServer to report to (the sandbox gives no --wireserver-url).
    let not_applicable = ["rke2-journal", "server-reachable", "azure-report"];
    // Facts of the machine the tests run on, not of the sandbox (the clock is the kernel's).
    let host_facts = ["resources", "disk-space", "time-sync"];
    for c in run.json["checks"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let status = c["status"].as_str().unwrap();
        if not_applicable.contains(&id) {
            assert_eq!(status, "skipped", "{c:#}");
        } else if host_facts.contains(&id) {
            assert_ne!(status, "fail", "{c:#}");
        } else {
            assert_eq!(status, "ok", "{c:#}");
        }
    }
    run.assert_check(
        "config",
        "ok",
        "from IMDS userData: role server, node cp-01",
        None,
    );
    run.assert_check(
        "key-vault",
        "ok",
        "characters (value not shown); the token file holds it",
        None,
    );
    run.assert_check("join-token-file", "ok", "mode 0600, owner root", None);
    run.assert_check("data-disk", "ok", "our ext4", None);
    run.assert_check(
        "data-disk-mount",
        "ok",
        "var-lib-longhorn.mount mounts UUID",
        None,
    );
    run.assert_check("data-disk-space", "ok", "/var/lib/longhorn: ", None);
    run.assert_check(
        "rke2-unit",
        "ok",
        "rke2-server.service is active (running)",
        None,
    );
    run.assert_check("last-run", "ok", "converged at", None);
    assert!(run.check("last-run")["details"][0]
        .as_str()
        .unwrap()
        .contains("start-rke2 changed"));
    assert_eq!(run.json["summary"]["fail"], 0);
    assert_eq!(run.json["node"]["config_source"], "imds_user_data");

    let text = doctor(
        &sb,
        DoctorArgs {
            text: true,
            ..json_run()
        },
    )
    .await;
    assert_eq!(text.code, 0);
    assert!(
        text.stdout
            .starts_with("canarie-agent doctor: node cp-01 (server), config from IMDS userData\n"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("✔ key-vault "), "{}", text.stdout);
    assert!(text.stdout.contains("- rke2-journal      skipped: "));
    assert!(text.stdout.contains("\ndoctor: "), "a summary line");
    assert!(
        !text.stdout.contains('\x1b'),
        "no colour when not on a terminal"
    );
    assert!(text.stderr.is_empty(), "quiet on stderr: {}", text.stderr);
}

#[tokio::test]
async fn a_proxy_without_no_proxy_warns_and_imds_still_answers_directly() {
    let sb = node(server_config()).await;
    // A proxy on a closed port: IMDS only answers if the agent really bypasses it.
    let closed = closed_port();
    let run = doctor(
        &sb,
        DoctorArgs {
            env: vec![
                ("HTTP_PROXY".into(), format!("http://user:pw@{closed}")),
                ("NO_PROXY".into(), "localhost".into()),
            ],
            ..json_run()
        },
    )
    .await;
    run.assert_check("imds", "ok", "answers at", None);
    run.assert_check(
        "imds-proxy",
        "warn",
        "HTTP_PROXY set, but NO_PROXY does not cover 169.254.169.254",
        Some("add 169.254.169.254 to NO_PROXY"),
    );
    assert!(
        !run.stdout.contains("user:pw"),
        "a proxy's credentials are never shown"
    );
}

/// A loopback address nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn imds_down_fails_imds_and_config_with_what_to_do() {
    let sb = node(server_config()).await;
    let run = doctor(
        &sb,
        DoctorArgs {
            imds_url: Some(format!("http://{}", closed_port())),
            ..json_run()
        },
    )
    .await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "imds",
        "fail",
        "IMDS instance metadata request",
        Some("169.254.169.254"),
    );
    run.assert_check(
        "config",
        "fail",
        "no last converged copy",
        Some("make IMDS reachable"),
    );
    run.assert_check("identity", "skipped", "no valid node config", None);
    run.assert_check("rke2-unit", "skipped", "no valid node config", None);
    // Host facts do not depend on Azure.
    run.assert_check("time-sync", &kernel_clock().0, "synchronized", None);
    run.assert_check("kernel", "ok", "BTF at /sys/kernel/btf/vmlinux", None);
}

#[tokio::test]
async fn a_hung_imds_does_not_hang_doctor_and_a_converged_node_falls_back() {
    let sb = node(server_config()).await;
    bootstrap(&sb).await;
    sb.sim
        .sim
        .set_rules(rules(json!([{"preset": "hang", "endpoint": "imds"}])));
    let started = std::time::Instant::now();
    // `doctor` itself fails the test if the run takes more than 20 s.
    let run = doctor(&sb, json_run()).await;
    eprintln!("doctor with a hung IMDS took {:?}", started.elapsed());
    assert_eq!(run.code, 1);
    run.assert_check(
        "imds",
        "fail",
        "no complete answer",
        Some("169.254.169.254"),
    );
    run.assert_check(
        "config",
        "warn",
        "using the last converged copy /var/lib/canarie-agent/last-config.json",
        Some("local state"),
    );
    assert_eq!(run.json["node"]["config_source"], "last_converged");
    run.assert_check("identity", "skipped", "IMDS is unreachable", None);
    run.assert_check("key-vault", "skipped", "no managed-identity token", None);
    // The node's own state is still examined from the converged copy.
    run.assert_check("rke2-config", "ok", "config.yaml", None);
    run.assert_check("rke2-unit", "ok", "active", None);
}

#[tokio::test]
async fn a_config_file_is_named_as_the_source_and_a_change_since_convergence_warns() {
    let sb = node(server_config()).await;
    bootstrap(&sb).await;
    let file = sb.path("/etc/canarie/node.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let with_config = |path: &std::path::Path| DoctorArgs {
        args: vec!["--config".into(), path.display().to_string()],
        ..json_run()
    };

    std::fs::write(&file, server_config().to_string()).unwrap();
    let run = doctor(&sb, with_config(&file)).await;
    run.assert_check("config", "ok", "valid, from file ", None);
    run.assert_check("config", "ok", "the node converged with it", None);
    assert_eq!(run.json["node"]["config_source"], "file");

    let mut changed = server_config();
    changed["cluster"]["public_ip"] = json!("20.30.40.99");
    std::fs::write(&file, changed.to_string()).unwrap();
    let run = doctor(&sb, with_config(&file)).await;
    run.assert_check(
        "config",
        "warn",
        "differs from the config the node last converged with",
        Some("canarie-agent plan"),
    );
    // The manifests now differ from what this config renders: doctor says so.
    run.assert_check("rke2-manifests", "fail", "differ from this agent's", None);

    changed["version"] = json!(2);
    std::fs::write(&file, changed.to_string()).unwrap();
    let run = doctor(&sb, with_config(&file)).await;
    run.assert_check(
        "config",
        "fail",
        "version",
        Some("canarie-agent config validate"),
    );
}

/// What the kernel says of its clock, read here independently of doctor: the status the
/// time-sync check must have (`ok` or `warn`) and the start of its finding. The test
/// machine's clock is whatever it is; doctor must agree with the kernel either way.
fn kernel_clock() -> (String, &'static str) {
    // SAFETY: a zeroed timex is valid, and modes 0 only reads the kernel's state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    assert!(unsafe { libc::adjtimex(&mut tx) } >= 0, "adjtimex");
    // The kernel's unsynchronized limit (16 s of maximum error), as systemd reads it.
    if tx.maxerror < 16_000_000 {
        ("ok".into(), "synchronized (")
    } else {
        ("warn".into(), "not synchronized: ")
    }
}

#[tokio::test]
async fn the_clock_check_follows_the_kernel_and_names_the_time_service() {
    let sb = node(server_config()).await;
    let (status, verdict) = kernel_clock();

    // Azure's host clock as a PTP device: named when the clock is not synchronized.
    let ptp = sb.path("/dev/ptp_hyperv");
    std::fs::create_dir_all(ptp.parent().unwrap()).unwrap();
    std::fs::write(&ptp, b"").unwrap();
    // (the unit systemd reports and its state, the finding, the hint when not synchronized)
    let cases = [
        (
            None,
            "no time service runs",
            "no time service is configured",
        ),
        (
            Some(("chrony.service", "active")),
            "chrony.service is active (running)",
            "refclock PHC /dev/ptp_hyperv",
        ),
        (
            Some(("systemd-timesyncd.service", "failed")),
            "systemd-timesyncd.service is failed",
            "timedatectl timesync-status",
        ),
    ];
    for (unit, finding, hint) in cases {
        {
            let mut state = sb.systemd.state.lock().unwrap();
            state.active.clear();
            if let Some((unit, active)) = unit {
                state.active.insert(unit.into(), active.into());
            }
        }
        let run = doctor(&sb, json_run()).await;
        let synced = status == "ok";
        run.assert_check(
            "time-sync",
            &status,
            &format!("{verdict}{finding}"),
            (!synced).then_some(hint),
        );
        let c = run.check("time-sync");
        let text = format!("{} {}", c["finding"], c["hint"]);
        for why in [
            "/dev/ptp_hyperv (Azure's host clock) is present",
            "Key Vault reject managed-identity tokens",
        ] {
            assert_eq!(text.contains(why), !synced, "{why}: {c:#}");
        }
    }
}

#[tokio::test]
async fn a_vm_without_its_identity_fails_identity() {
    let sb = node_with(scenario(json!({
        "user_data_json": server_config(),
        "identities": {"system": false}
    })))
    .await;
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "identity",
        "fail",
        "Identity not found",
        Some("enable the VM's system-assigned identity"),
    );
    run.assert_check("key-vault", "skipped", "no managed-identity token", None);
}

#[tokio::test]
async fn key_vault_refusals_name_the_fix() {
    let sb = node(server_config()).await;
    sb.sim
        .sim
        .set_rules(rules(json!([{"preset": "kv_403_rbac"}])));
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "key-vault",
        "fail",
        "HTTP 403",
        Some("'Key Vault Secrets User' role on vault kv-canarie"),
    );
    // Doctor reports at once instead of waiting out the RBAC propagation window.
    assert_eq!(sb.sim.statuses("/secrets/"), vec![403]);

    sb.sim.sim.set_rules(rules(json!([{"preset": "kv_404"}])));
    let run = doctor(&sb, json_run()).await;
    run.assert_check(
        "key-vault",
        "fail",
        "HTTP 404",
        Some("create secret rke2-join-token in vault kv-canarie"),
    );
}

#[tokio::test]
async fn invalid_user_data_fails_config_and_skips_what_depends_on_it() {
    let mut config = server_config();
    config["role"] = json!("worker");
    let sb = node(config).await;
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "config",
        "fail",
        "role: unknown variant `worker`",
        Some("fix the VM's user_data"),
    );
    for id in ["identity", "join-token-file", "data-disk", "rke2-unit"] {
        run.assert_check(
            id,
            "skipped",
            "no valid node config (see check config)",
            None,
        );
    }
    run.assert_check("imds", "ok", "answers", None);
}

#[tokio::test]
async fn a_token_file_readable_by_others_fails() {
    let sb = node(server_config()).await;
    bootstrap(&sb).await;
    std::fs::set_permissions(sb.path(TOKEN_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "join-token-file",
        "fail",
        "has mode 0644: the join token is readable by every user on the node",
        Some("chmod 600 /etc/rancher/rke2/config.yaml.d/10-token.yaml"),
    );
    run.assert_check("rke2-config", "ok", "", None);
}

#[tokio::test]
async fn manifests_that_drifted_from_the_binary_fail() {
    let sb = node(server_config()).await;
    bootstrap(&sb).await;
    let manifest = sb.path("/var/lib/rancher/rke2/server/manifests/canarie-longhorn.yaml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("# edited by hand\n");
    std::fs::write(&manifest, text).unwrap();
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "rke2-manifests",
        "fail",
        "differ from this agent's: canarie-longhorn.yaml",
        Some("`systemctl restart canarie-agent` rewrites them"),
    );
    run.assert_check("rke2-config", "ok", "", None);

    // A key this agent never writes in config.yaml (set by hand on the node).
    let config = sb.path("/etc/rancher/rke2/config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("profile: cis\n");
    std::fs::write(&config, text).unwrap();
    let run = doctor(&sb, json_run()).await;
    run.assert_check(
        "rke2-config",
        "fail",
        "keys that are not rke2-server options this agent writes: profile",
        Some("not on the node"),
    );
}

#[tokio::test]
async fn a_failed_rke2_unit_fails_with_the_last_run() {
    let sb = node(server_config()).await;
    sb.systemd
        .set_outcome("rke2-server.service", StartOutcome::Failed);
    let run = doctor_after_failed_bootstrap(&sb, 7).await;
    run.assert_check(
        "rke2-unit",
        "fail",
        "rke2-server.service is failed",
        Some("check rke2-journal"),
    );
    run.assert_check(
        "last-run",
        "fail",
        ", exit code 7: bootstrap failed in step start-rke2",
        Some("see checks rke2-unit, rke2-journal above; after fixing the cause, `systemctl restart canarie-agent`"),
    );
}

#[tokio::test]
async fn an_rke2_unit_systemd_has_not_reloaded_warns() {
    let sb = node(server_config()).await;
    bootstrap(&sb).await;
    sb.systemd
        .state
        .lock()
        .unwrap()
        .need_reload
        .insert("rke2-server.service".into());
    let run = doctor(&sb, json_run()).await;
    run.assert_check(
        "rke2-unit",
        "warn",
        "rke2-server.service is active (running), loaded, but systemd has not read its changed unit files",
        Some("`systemctl restart canarie-agent` reloads systemd"),
    );
}

#[tokio::test]
async fn a_missing_cluster_secret_is_named_with_exit_code_8_and_its_fix() {
    let mut config = server_config();
    config["cluster_secrets"] = json!({"grafana_admin": {"secret": "grafana-admin-password"}});
    // The vault holds the join token only.
    let sb = node(config).await;
    let run = doctor_after_failed_bootstrap(&sb, 8).await;
    run.assert_check(
        "last-run",
        "fail",
        ", exit code 8: bootstrap failed in step cluster-secrets",
        Some("Key Vault secret grafana-admin-password (cluster_secrets.grafana_admin) in vault kv-canarie: create secret grafana-admin-password in vault kv-canarie"),
    );
    let hint = run.check("last-run")["hint"].as_str().unwrap().to_string();
    assert!(hint.contains("see checks identity, key-vault"), "{hint}");
    // The vault itself is readable: the join token is there.
    run.assert_check("key-vault", "ok", "secret rke2-join-token", None);
}

#[tokio::test]
async fn an_agent_reaches_its_server_or_says_which_port_does_not_answer() {
    let addr = private_loopback();
    let sb = node(agent_for(&addr)).await;
    bootstrap(&sb).await;

    let run = doctor(&sb, json_run()).await;
    run.assert_check(
        "server-reachable",
        "fail",
        &format!("supervisor {addr}:9345: Connection refused"),
        Some("NSG allows TCP 9345 and 6443"),
    );
    assert!(run.check("server-reachable")["finding"]
        .as_str()
        .unwrap()
        .contains(&format!("API server {addr}:6443: Connection refused")));

    let _supervisor = std::net::TcpListener::bind((addr.as_str(), 9345)).unwrap();
    let run = doctor(&sb, json_run()).await;
    run.assert_check(
        "server-reachable",
        "fail",
        &format!("supervisor {addr}:9345 accepts connections"),
        None,
    );

    let _api = std::net::TcpListener::bind((addr.as_str(), 6443)).unwrap();
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    run.assert_check(
        "server-reachable",
        "ok",
        &format!("API server {addr}:6443 accepts connections"),
        None,
    );
    run.assert_check("rke2-manifests", "skipped", "role agent", None);
    run.assert_check("rke2-unit", "ok", "rke2-agent.service is active", None);
}

#[tokio::test]
async fn a_data_disk_with_a_foreign_filesystem_is_refused() {
    let mut lab = Lab::new();
    let mut config = server_config();
    config["data_disk"] = json!({"lun": 3, "wait_seconds": 0});
    let sb = node(config).await;
    let image = lab.image("xfs.img", disk_support::GIB);
    sh(&format!("mkfs.xfs -q -L scratch '{}'", image.display()));
    let dev = lab.attach(&image);
    Lab::link_lun(
        &canarie_agent::paths::Root::new(sb.root()),
        LinkScheme::ByLun,
        3,
        &dev,
    );
    let run = doctor(&sb, json_run()).await;
    assert_eq!(run.code, 1);
    run.assert_check(
        "data-disk",
        "fail",
        &format!("{} (via ", dev.display()),
        Some("wipefs -a"),
    );
    assert!(run.check("data-disk")["finding"]
        .as_str()
        .unwrap()
        .contains("refused"));
    run.assert_check("data-disk-mount", "skipped", "no filesystem of ours", None);
    run.assert_check("data-disk-space", "skipped", "nothing is mounted", None);
}

#[tokio::test]
async fn as_an_ordinary_user_root_only_checks_are_skipped_and_the_rest_run() {
    let sb = node(server_config()).await;
    bootstrap(&sb).await;
    // As on a real node, / and the CA bundle are readable by everyone; the RKE2 files are
    // root's and 0600.
    for dir in [sb.root(), sb.sim.ca_file.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let args = || DoctorArgs {
        as_nobody: true,
        ..json_run()
    };
    let run = doctor(&sb, args()).await;
    assert_eq!(run.json["node"]["as_root"], false);
    for id in ["join-token-file", "rke2-config", "rke2-manifests"] {
        run.assert_check(id, "skipped", "needs root", None);
    }
    for id in ["imds", "config", "identity", "key-vault", "last-run"] {
        run.assert_check(id, "ok", "", None);
    }
    let text = doctor(
        &sb,
        DoctorArgs {
            text: true,
            ..args()
        },
    )
    .await;
    assert!(
        text.stdout.contains("skipped: needs root"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("not root: some checks skipped"));
}

#[tokio::test]
async fn the_access_token_never_appears_in_any_output() {
    const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOi.KNOWN-ACCESS-TOKEN.sig";
    let sb = node(server_config()).await;
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    // IMDS hands out a token the test knows; Key Vault, which never issued it, refuses it.
    sb.sim.sim.set_rules(rules(json!([{
        "endpoint": "token",
        "status": 200,
        "body": {
            "access_token": ACCESS_TOKEN, "refresh_token": "", "expires_in": "3600",
            "expires_on": far.to_string(), "not_before": "0",
            "resource": "https://vault.azure.net", "token_type": "Bearer"
        }
    }])));
    for text in [false, true] {
        for log in [None, Some("debug")] {
            let env = log
                .map(|l| vec![("CANARIE_LOG".to_string(), l.to_string())])
                .unwrap_or_default();
            let run = doctor(
                &sb,
                DoctorArgs {
                    text,
                    env,
                    ..json_run()
                },
            )
            .await;
            for out in [&run.stdout, &run.stderr] {
                assert!(
                    !out.contains("KNOWN-ACCESS-TOKEN"),
                    "access token shown:\n{out}"
                );
            }
            if !text {
                run.assert_check("identity", "ok", "valid for", None);
                run.assert_check("key-vault", "fail", "HTTP 401", Some("tenant"));
            }
        }
    }
}

#[tokio::test]
async fn doctor_that_cannot_run_exits_2() {
    let sb = node(server_config()).await;
    let missing = sb.path("/no/such/root");
    let out = tokio::process::Command::new(support::sandbox::BIN)
        .args(["doctor", "--root"])
        .arg(&missing)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("doctor cannot run") && stderr.contains("is not a directory"),
        "{stderr}"
    );
    let out = tokio::process::Command::new(support::sandbox::BIN)
        .args(["doctor", "--imds-url", "https://127.0.0.1:1"])
        .arg("--root")
        .arg(sb.root())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be plain http://"));
}

#[tokio::test]
async fn rke2_version_is_reported_next_to_the_build_and_a_mismatch_warns() {
    let sb = node(server_config()).await;
    let built_for = canarie_agent::rke2::RKE2_VERSION;
    let run = doctor(&sb, json_run()).await;
    run.assert_check("rke2-version", "ok", built_for, None);

    fake_rke2(&sb, "v1.35.6+rke2r1");
    let run = doctor(&sb, json_run()).await;
    run.assert_check(
        "rke2-version",
        "warn",
        &format!("RKE2 v1.35.6+rke2r1 on the node; this agent is built for RKE2 {built_for}"),
        Some("another minor release"),
    );

    std::fs::remove_file(sb.path("/usr/local/bin/rke2")).unwrap();
    let run = doctor(&sb, json_run()).await;
    run.assert_check("rke2-version", "fail", "no rke2 binary", Some(built_for));
}

#[test]
fn every_check_and_every_step_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    for spec in canarie_agent::doctor::CHECKS {
        assert!(
            docs.contains(&format!("`{}`", spec.id)),
            "docs/operations.md does not describe check {}",
            spec.id
        );
    }
    // The step table's rows: the step, then its exit code.
    for step in canarie_agent::reconcile::STEP_NAMES {
        let row = format!("\n| `{step}` | ");
        assert!(
            docs.match_indices(&row)
                .any(|(at, _)| docs[at + row.len()..].starts_with(|c: char| c.is_ascii_digit())),
            "docs/operations.md does not say which checks explain a failed step {step}"
        );
    }
}
