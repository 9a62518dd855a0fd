//! `plan` and `bootstrap` end to end in a `--root` sandbox: the real binary, azure-sim over
//! real sockets and TLS, and a fake systemd on a private dbus-daemon.

mod support;

use base64::Engine as _;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use support::dbus::StartOutcome;
use support::sandbox::{agent_config, server_config, Sandbox};
use support::sim::{rules, JOIN_TOKEN};

const TOKEN_FILE: &str = "/etc/rancher/rke2/config.yaml.d/10-token.yaml";

#[tokio::test]
async fn plan_shows_the_token_fetch_and_the_files_and_writes_nothing() {
    let sb = Sandbox::new(server_config()).await;
    let before = sb.snapshot();
    let run = sb.run(&["plan"]).await;
    run.assert_success();
    run.assert_no_secret();
    assert!(
        run.stderr.contains("managed-identity token obtained"),
        "{}",
        run.stderr
    );
    for expected in [
        "node config: IMDS userData (role server, node cp-01)",
        "create   /etc/rancher/rke2/config.yaml.d/10-token.yaml (mode 0600)",
        "create   /etc/rancher/rke2/config.yaml",
        "/var/lib/rancher/rke2/server/manifests/",
        "start    rke2-server.service",
        "plan: ",
    ] {
        assert!(
            run.stdout.contains(expected),
            "plan lacks {expected:?}:\n{}",
            run.stdout
        );
    }
    assert_eq!(sb.snapshot(), before, "plan wrote to the node");
    assert!(sb.systemd.started().is_empty(), "plan started a unit");

    let json_run = sb.run(&["plan", "--json"]).await;
    json_run.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json_run.stdout).unwrap();
    assert_eq!(v["mode"], "plan");
    assert_eq!(v["role"], "server");
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, canarie_agent::reconcile::STEP_NAMES);
    assert!(v["changes"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn bootstrap_converges_then_changes_nothing() {
    let sb = Sandbox::new(server_config()).await;
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    run.assert_no_secret();
    let token = sb.path(TOKEN_FILE);
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&token)
        .unwrap()
        .contains(JOIN_TOKEN));
    assert!(sb.path("/etc/rancher/rke2/config.yaml").exists());
    assert_eq!(sb.systemd.started(), vec!["rke2-server.service"]);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.path("/var/lib/canarie-agent/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["last_run"]["result"], "converged");
    assert!(state["converged_at"].is_string());
    assert!(
        !std::fs::read_to_string(sb.path("/var/lib/canarie-agent/state.json"))
            .unwrap()
            .contains(JOIN_TOKEN)
    );

    // Converged: a second run rewrites nothing and restarts nothing; plan agrees.
    sb.assert_rerun_changes_nothing().await;
    assert_eq!(sb.systemd.started(), vec!["rke2-server.service"]);
    assert!(sb.systemd.state.lock().unwrap().restarted.is_empty());
    let plan = sb.run(&["plan"]).await;
    assert!(
        plan.stdout
            .contains("plan: no changes: the node is converged"),
        "{}",
        plan.stdout
    );
}

#[tokio::test]
async fn an_agent_node_gets_the_server_url_and_no_manifests() {
    let sb = Sandbox::new(agent_config()).await;
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    let config = std::fs::read_to_string(sb.path("/etc/rancher/rke2/config.yaml")).unwrap();
    assert!(config.contains("https://10.20.0.4:9345"), "{config}");
    assert!(!sb.path("/var/lib/rancher/rke2/server/manifests").exists());
    assert_eq!(sb.systemd.started(), vec!["rke2-agent.service"]);
}

#[tokio::test]
async fn bad_user_data_is_one_clear_line_and_no_change() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut invalid = server_config();
    invalid["role"] = json!("worker");
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "userData: is empty"),
        (Some("!!!not base64!!!".into()), "userData: is not base64"),
        (Some(b64(b"{not json")), "is not valid JSON"),
        (
            Some(b64(&serde_json::to_vec(&invalid).unwrap())),
            "role: unknown variant `worker`",
        ),
        (Some(b64(&vec![b'x'; 70 * 1024])), "limit"),
    ];
    let sb = Sandbox::new(server_config()).await;
    for (user_data, expected) in cases {
        sb.sim.sim.set_user_data(user_data);
        let before = sb.snapshot();
        let run = sb.run(&["bootstrap"]).await;
        assert_eq!(run.code, 3, "{expected}: {}", run.stderr);
        let line = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("canarie-agent: "))
            .collect::<Vec<_>>();
        assert_eq!(line.len(), 1, "{}", run.stderr);
        assert!(
            line[0].contains(expected) && line[0].contains("step config"),
            "{expected}: {}",
            line[0]
        );
        // Only the record of the failed run (state, metrics) may be written; nothing of the
        // node's config.
        let record = |f: &(std::path::PathBuf, Vec<u8>, u32, std::time::SystemTime)| {
            f.0.ends_with("state.json") || f.0.ends_with("canarie_agent.prom")
        };
        let after: Vec<_> = sb.snapshot().into_iter().filter(|f| !record(f)).collect();
        let before: Vec<_> = before.into_iter().filter(|f| !record(f)).collect();
        assert_eq!(after, before, "{expected}: bootstrap changed the node");
        assert!(sb.systemd.started().is_empty());
    }
}

#[tokio::test]
async fn a_first_boot_without_imds_fails_clearly_and_starts_nothing() {
    let sb = Sandbox::new(server_config()).await;
    sb.sim
        .sim
        .set_rules(rules(json!([{"endpoint": "imds", "status": 503}])));
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("IMDS userData request gave up"),
        "{}",
        run.stderr
    );
    assert!(sb.systemd.started().is_empty());
    assert!(!sb.path(TOKEN_FILE).exists());
}

#[tokio::test]
async fn a_later_boot_without_azure_starts_rke2_from_local_state() {
    let sb = Sandbox::new(server_config()).await;
    sb.run(&["bootstrap"]).await.assert_success();
    let token_before = std::fs::read(sb.path(TOKEN_FILE)).unwrap();

    // Reboot: RKE2 is not running; IMDS does not answer at all.
    let sb = Sandbox {
        systemd: support::dbus::FakeSystemd::start().await,
        ..sb
    };
    sb.sim
        .sim
        .set_rules(rules(json!([{"preset": "hang", "endpoint": "any"}])));
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    assert!(
        run.stdout
            .contains("warning: IMDS unreachable, using the last converged node config"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("WARN"),
        "no warning logged:\n{}",
        run.stderr
    );
    assert_eq!(sb.systemd.started(), vec!["rke2-server.service"]);
    assert_eq!(std::fs::read(sb.path(TOKEN_FILE)).unwrap(), token_before);
    run.assert_no_secret();
}

#[tokio::test]
async fn a_cloned_image_does_not_trust_the_previous_machines_state() {
    let sb = Sandbox::new(server_config()).await;
    sb.run(&["bootstrap"]).await.assert_success();
    std::fs::write(
        sb.path("/etc/machine-id"),
        "ffffffffffffffffffffffffffffffff\n",
    )
    .unwrap();
    sb.sim
        .sim
        .set_rules(rules(json!([{"endpoint": "imds", "status": 503}])));
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(
        run.code, 3,
        "a clone fell back on another machine's state: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("belongs to another machine"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_failed_rke2_start_names_the_step_and_the_unit() {
    let sb = Sandbox::new(server_config()).await;
    sb.systemd
        .set_outcome("rke2-server.service", StartOutcome::Failed);
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(run.code, 7, "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("canarie-agent: bootstrap failed in step start-rke2:"),
        "{last}"
    );
    assert!(last.contains("journalctl -u rke2-server.service"), "{last}");
    let state = std::fs::read_to_string(sb.path("/var/lib/canarie-agent/state.json")).unwrap();
    assert!(state.contains("\"result\": \"failed\""), "{state}");
}

#[tokio::test]
async fn changes_restart_rke2_only_when_it_reads_them() {
    let sb = Sandbox::new(server_config()).await;
    sb.run(&["bootstrap"]).await.assert_success();

    // A new public IP only changes a manifest: RKE2 applies it itself, no restart.
    let mut cfg = server_config();
    cfg["cluster"]["public_ip"] = json!("20.30.40.99");
    sb.set_config(&cfg);
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    assert!(
        run.stdout
            .contains("update   /var/lib/rancher/rke2/server/manifests/"),
        "{}",
        run.stdout
    );
    assert!(
        sb.systemd.state.lock().unwrap().restarted.is_empty(),
        "{}",
        run.stdout
    );

    // A rotated join token is read at start: RKE2 restarts once.
    sb.sim
        .sim
        .set_secret("rke2-join-token", "K10-rotated-token-0001");
    let run = sb.run(&["bootstrap"]).await;
    run.assert_success();
    assert!(
        !run.stdout.contains("K10-rotated-token-0001")
            && !run.stderr.contains("K10-rotated-token-0001")
    );
    assert_eq!(
        sb.systemd.state.lock().unwrap().restarted,
        vec!["rke2-server.service"]
    );
    assert!(std::fs::read_to_string(sb.path(TOKEN_FILE))
        .unwrap()
        .contains("K10-rotated-token-0001"));
}

/// A run stopped after writing RKE2's changed config but before restarting RKE2 (the
/// files are current, RKE2 still runs with the old ones): the next run restarts it, once.
#[tokio::test]
async fn a_restart_an_interrupted_run_owed_is_made_by_the_next() {
    let sb = Sandbox::new(server_config()).await;
    sb.run(&["bootstrap"]).await.assert_success();

    let mut cfg = server_config();
    cfg["cluster"]["tls_san"] = json!(["cp-01.example.com", "api.example.com"]);
    sb.set_config(&cfg);
    // What the stopped run left: the new config.yaml in place, RKE2 not restarted.
    let rendered = tempfile::tempdir().unwrap();
    let config_file = rendered.path().join("node.json");
    std::fs::write(&config_file, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = rendered.path().join("out");
    sb.run(&[
        "render",
        "--config",
        config_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await
    .assert_success();
    std::fs::copy(
        out.join("etc/rancher/rke2/config.yaml"),
        sb.path("/etc/rancher/rke2/config.yaml"),
    )
    .unwrap();

    let plan = sb.run(&["plan"]).await;
    plan.assert_success();
    assert!(
        plan.stdout.contains("restart  rke2-server.service")
            && plan.stdout.contains("did not restart RKE2 for"),
        "{}",
        plan.stdout
    );
    sb.run(&["bootstrap"]).await.assert_success();
    assert_eq!(
        sb.systemd.state.lock().unwrap().restarted,
        vec!["rke2-server.service"]
    );
    sb.assert_rerun_changes_nothing().await;
    assert_eq!(sb.systemd.state.lock().unwrap().restarted.len(), 1);
}

/// A run stopped between writing a unit drop-in and `daemon-reload`: systemd reports
/// NeedDaemonReload, and the next run reloads although no file needs rewriting.
#[tokio::test]
async fn a_reload_systemd_still_needs_is_made_by_the_next_run() {
    let sb = Sandbox::new(agent_config()).await;
    sb.run(&["bootstrap"]).await.assert_success();
    let reloads = sb.systemd.state.lock().unwrap().reloads;
    sb.systemd
        .state
        .lock()
        .unwrap()
        .need_reload
        .insert("rke2-agent.service".into());

    let plan = sb.run(&["plan"]).await;
    plan.assert_success();
    assert!(
        plan.stdout
            .contains("systemd has not read the unit's changed files"),
        "{}",
        plan.stdout
    );
    sb.run(&["bootstrap"]).await.assert_success();
    assert_eq!(sb.systemd.state.lock().unwrap().reloads, reloads + 1);
    assert!(sb.systemd.state.lock().unwrap().restarted.is_empty());
    sb.assert_rerun_changes_nothing().await;
    assert_eq!(sb.systemd.state.lock().unwrap().reloads, reloads + 1);
}

#[tokio::test]
async fn directories_keep_their_usual_mode_under_the_units_umask() {
    // The packaged unit runs the agent with UMask=0077 (docs/packaging.md): what it creates
    // without an explicit mode is private. Directories under /etc/rancher, /var/lib/rancher
    // and /var/lib/canarie-agent still get 0755, like RKE2 and systemctl make them.
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new(server_config()).await;
    let mut cmd = sb.command(&["bootstrap"]);
    // SAFETY: umask(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &str| std::fs::metadata(sb.path(p)).unwrap().permissions().mode() & 0o7777;
    for dir in [
        "/etc/rancher",
        "/etc/rancher/rke2",
        "/etc/rancher/rke2/config.yaml.d",
        "/var/lib/rancher",
        "/var/lib/rancher/rke2/server/manifests",
        "/var/lib/canarie-agent",
    ] {
        assert_eq!(mode(dir), 0o755, "{dir}");
    }
    assert_eq!(mode(TOKEN_FILE), 0o600);
}
