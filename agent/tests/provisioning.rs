//! The provisioning step end to end in a `--root` sandbox: azure-sim's osProfile and
//! publicKeys, the real binary, real `useradd`/`usermod --prefix` and `ssh-keygen -A -f`;
//! sshd's key-login drop-in (reloading a node's sshd over D-Bus is in the VM tests).
//! (The hostname over D-Bus is in systemd_dbus.rs; the root filesystem grown on a loop
//! device in disk_lifecycle.rs.)

mod support;

use serde_json::json;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use support::sandbox::{server_config, Sandbox};
use support::sim::{scenario, TestSim};

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1111111111111111111111111111111111111111111 alice";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2222222222222222222222222222222222222222222 bob";
const KEYS: &str = "/home/ops/.ssh/authorized_keys";
const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/50-canarie-agent.conf";
/// The first lines of Debian 12's /etc/ssh/sshd_config.
const DEBIAN_SSHD_CONFIG: &str = "\n# This is the sshd server system-wide configuration file.\n\n\
Include /etc/ssh/sshd_config.d/*.conf\n\n#Port 22\nKbdInteractiveAuthentication no\nUsePAM yes\n";

async fn node(extra: serde_json::Value) -> Sandbox {
    let mut fields = json!({
        "user_data_json": server_config(),
        "admin_username": "ops",
        "computer_name": "cp-01",
        "public_keys": [
            {"key_data": KEY_A, "path": KEYS},
            {"key_data": KEY_B, "path": KEYS}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let sb = Sandbox::with_sim(TestSim::start(scenario(fields)).await).await;
    // sshd installed: the host keys are the agent's to generate.
    fs::create_dir_all(sb.path("/etc/ssh")).unwrap();
    fs::write(sb.path("/etc/ssh/sshd_config"), DEBIAN_SSHD_CONFIG).unwrap();
    sb
}

fn mode(path: &std::path::Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn a_new_vm_gets_its_user_keys_sudo_hostname_and_host_keys_then_nothing_changes() {
    let sb = node(json!({})).await;

    let plan = sb.run(&["plan"]).await;
    plan.assert_success();
    for expected in [
        "create   user ops",
        KEYS,
        "update   hostname (cp-01)",
        "SSH host keys",
        SSHD_DROPIN,
    ] {
        assert!(
            plan.stdout.contains(expected),
            "plan lacks {expected:?}:\n{}",
            plan.stdout
        );
    }
    assert!(!sb.path("/home/ops").exists(), "plan created the user");

    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();

    let passwd = fs::read_to_string(sb.path("/etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("ops:"))
        .expect("user ops");
    let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid >= 1000, "{line}");
    let shadow = fs::read_to_string(sb.path("/etc/shadow")).unwrap();
    let hash = shadow
        .lines()
        .find(|l| l.starts_with("ops:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap();
    assert!(hash.starts_with('!'), "password not locked: {hash:?}");
    let group = fs::read_to_string(sb.path("/etc/group")).unwrap();
    for g in ["adm", "sudo"] {
        let members = group
            .lines()
            .find(|l| l.starts_with(&format!("{g}:")))
            .unwrap();
        assert!(
            members.ends_with(":ops") || members.contains(",ops"),
            "{members}"
        );
    }

    let home = sb.path("/home/ops");
    assert_eq!(mode(&home), 0o750);
    assert_eq!(fs::metadata(&home).unwrap().uid(), uid);
    let keys = sb.path(KEYS);
    assert_eq!(
        fs::read_to_string(&keys).unwrap(),
        format!("{KEY_A}\n{KEY_B}\n")
    );
    assert_eq!(mode(&keys), 0o600);
    assert_eq!(mode(keys.parent().unwrap()), 0o700);
    for p in [&keys, &keys.parent().unwrap().to_path_buf()] {
        assert_eq!(
            fs::metadata(p).unwrap().uid(),
            uid,
            "{} not owned by ops",
            p.display()
        );
    }

    let sudoers = sb.path("/etc/sudoers.d/90-canarie-admin");
    assert!(fs::read_to_string(&sudoers)
        .unwrap()
        .contains("\nops ALL=(ALL) NOPASSWD:ALL\n"));
    assert_eq!(mode(&sudoers), 0o440);
    if let Ok(out) = std::process::Command::new("visudo")
        .arg("-cf")
        .arg(&sudoers)
        .output()
    {
        assert!(
            out.status.success(),
            "visudo: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("visudo not installed: the sudoers syntax is not checked by sudo here");
    }

    assert_eq!(
        fs::read_to_string(sb.path("/etc/hostname")).unwrap(),
        "cp-01\n"
    );
    for t in ["rsa", "ecdsa", "ed25519"] {
        assert!(
            sb.path(&format!("/etc/ssh/ssh_host_{t}_key")).exists(),
            "no {t} host key"
        );
    }

    let dropin = sb.path(SSHD_DROPIN);
    let text = fs::read_to_string(&dropin).unwrap();
    for line in [
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
    ] {
        assert!(text.lines().any(|l| l == line), "{text}");
    }
    assert_eq!(mode(&dropin), 0o644);
    assert!(
        !run.stderr
            .contains("password provisioning is not supported"),
        "{}",
        run.stderr
    );

    let again = sb.assert_rerun_changes_nothing().await;
    assert!(!again.stderr.contains("provisioning: "), "{}", again.stderr);
}

#[tokio::test]
async fn host_keys_are_left_to_the_packages_unit_where_it_is_installed() {
    let sb = node(json!({})).await;
    let unit = sb.path(canarie_agent::provision::HOST_KEYS_UNIT);
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(&unit, "[Service]\nExecStart=/usr/bin/ssh-keygen -A\n").unwrap();
    let plan = sb.run(&["plan"]).await;
    plan.assert_success();
    assert!(!plan.stdout.contains("SSH host keys"), "{}", plan.stdout);
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    assert!(
        run.stderr.contains(
            "SSH host keys rsa,ecdsa,ed25519 missing: canarie-ssh-host-keys.service makes them"
        ),
        "{}",
        run.stderr
    );
    for t in canarie_agent::provision::HOST_KEY_TYPES {
        let key = sb.path(&canarie_agent::provision::host_key_path(t));
        assert!(!key.exists(), "the agent made {}", key.display());
    }
    assert!(sb.path(KEYS).exists(), "the rest of the provisioning ran");
    sb.assert_rerun_changes_nothing().await;
}

#[tokio::test]
async fn password_login_stays_off_when_azure_allows_it_and_says_so() {
    let sb = node(json!({"disable_password_authentication": false})).await;
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    let warnings: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.contains("password provisioning is not supported"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(fs::read_to_string(sb.path(SSHD_DROPIN))
        .unwrap()
        .contains("\nPasswordAuthentication no\n"));
    // Someone turned password login back on in the drop-in: the next run repairs it.
    fs::write(sb.path(SSHD_DROPIN), "PasswordAuthentication yes\n").unwrap();
    let plan = sb.run(&["plan"]).await;
    assert!(plan.stdout.contains(SSHD_DROPIN), "{}", plan.stdout);
    sb.run(&["bootstrap"]).await.assert_success();
    assert!(fs::read_to_string(sb.path(SSHD_DROPIN))
        .unwrap()
        .contains("\nPasswordAuthentication no\n"));
    sb.assert_rerun_changes_nothing().await;
}

#[tokio::test]
async fn an_sshd_config_without_drop_ins_is_left_alone() {
    let sb = node(json!({})).await;
    fs::write(sb.path("/etc/ssh/sshd_config"), "Port 22\nUsePAM yes\n").unwrap();
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    assert!(!sb.path("/etc/ssh/sshd_config.d").exists());
    assert!(
        run.stderr
            .contains("does not include /etc/ssh/sshd_config.d"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_to_string(sb.path("/etc/ssh/sshd_config")).unwrap(),
        "Port 22\nUsePAM yes\n"
    );
    sb.assert_rerun_changes_nothing().await;
}

#[tokio::test]
async fn keys_are_exactly_what_imds_lists_with_their_mode_and_owner() {
    let sb = node(json!({})).await;
    sb.run(&["bootstrap"]).await.assert_success();
    let keys = sb.path(KEYS);
    // Someone added a key by hand and opened the file up: IMDS's list is the desired state.
    fs::write(
        &keys,
        format!("{KEY_A}\nssh-rsa AAAAB3Nza intruder\n{KEY_B}\n"),
    )
    .unwrap();
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&keys, Some(0), Some(0)).unwrap();

    let plan = sb.run(&["plan"]).await;
    assert!(plan.stdout.contains(KEYS), "{}", plan.stdout);
    sb.run(&["bootstrap"]).await.assert_success();
    assert_eq!(
        fs::read_to_string(&keys).unwrap(),
        format!("{KEY_A}\n{KEY_B}\n")
    );
    assert_eq!(mode(&keys), 0o600);
    assert_ne!(fs::metadata(&keys).unwrap().uid(), 0);
    sb.assert_rerun_changes_nothing().await;
}

#[tokio::test]
async fn a_key_path_outside_the_users_home_fails_the_step_and_changes_nothing() {
    let sb = node(json!({
        "public_keys": [{"key_data": KEY_A, "path": "/root/.ssh/authorized_keys"}]
    }))
    .await;
    let before = sb.snapshot();
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(run.code, 9, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("step provisioning"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("/root/.ssh/authorized_keys is not under"),
        "{}",
        run.stderr
    );
    assert!(!sb.path("/root/.ssh").exists());
    assert!(!sb.path("/home/ops").exists(), "refused before any change");
    // Only the agent's own records changed.
    let changed: Vec<_> = sb
        .snapshot()
        .into_iter()
        .filter(|f| !before.contains(f))
        .map(|f| f.0)
        .filter(|p| !p.starts_with(sb.path("/var/lib/canarie-agent")))
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
}

#[tokio::test]
async fn an_admin_name_that_is_a_system_account_is_refused() {
    let sb = node(json!({"admin_username": "daemon", "public_keys": []})).await;
    let passwd = sb.path("/etc/passwd");
    let mut text = fs::read_to_string(&passwd).unwrap();
    text.push_str("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n");
    fs::write(&passwd, text).unwrap();
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(run.code, 9, "{}", run.stderr);
    assert!(run.stderr.contains("is a system account"), "{}", run.stderr);
    assert!(!sb.path("/etc/sudoers.d/90-canarie-admin").exists());
}

#[tokio::test]
async fn a_cloud_init_image_leaves_provisioning_to_cloud_init() {
    let sb = node(json!({})).await;
    fs::create_dir_all(sb.path("/usr/bin")).unwrap();
    fs::write(sb.path("/usr/bin/cloud-init"), "#!/bin/sh\n").unwrap();
    let run = sb.run(&["bootstrap", "--json"]).await;
    run.assert_success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "provisioning")
        .unwrap();
    assert_eq!(step["outcome"], "skipped", "{step}");
    assert!(!sb.path("/home/ops").exists());
    assert!(!sb.path("/etc/hostname").exists());
}
