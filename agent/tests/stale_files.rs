//! Files the node config stops wanting are removed: the real binary in a `--root` sandbox
//! (azure-sim over real sockets and TLS, a fake systemd on a private bus) converges a node,
//! the config loses a feature in place, and the next run removes exactly the agent's files
//! for it (an operator's files beside them stay), reloads or restarts only what reads them,
//! and a run after that changes nothing. The worker case uses a real loop-device data disk
//! (needs root) and checks that losing `data_disk` never touches the mount.

mod disk_support;
mod support;

use disk_support::{Lab, GIB};
use serde_json::{json, Value};
use support::sandbox::{server_config, Run, Sandbox};
use support::sim::{scenario, TestSim, JOIN_TOKEN, SECRET};

const MANIFESTS: &str = "/var/lib/rancher/rke2/server/manifests";
const GIT_TOKEN: &str = "ghp_staleFilesGitToken0123456789";
const LONGHORN_PW: &str = "stale-files-longhorn-Pw-41d7";

fn full_server() -> Value {
    let mut c = server_config();
    c["cluster"]["dns_zone"] = json!("k8s.example.com");
    c["cluster"]["git_repo"]["auth_secret"] = json!("canarie-kube-auth");
    c["cluster_secrets"] = json!({
        "git_auth": {"secret": "git-token", "username": "x-access-token"},
        "longhorn_ui_auth": {"secret": "longhorn-ui-password"}
    });
    c
}

/// The same server without git_repo, dns_zone and the git credentials; the Longhorn UI
/// login stays declared (its Ingress goes with the zone, its Secret stays).
fn reduced_server() -> Value {
    let mut c = full_server();
    let cluster = c["cluster"].as_object_mut().unwrap();
    cluster.remove("git_repo");
    cluster.remove("dns_zone");
    c["cluster_secrets"]
        .as_object_mut()
        .unwrap()
        .remove("git_auth");
    c
}

fn ok(run: &Run) {
    run.assert_success();
    run.assert_no_secret();
    for value in [GIT_TOKEN, LONGHORN_PW] {
        assert!(
            !run.stdout.contains(value) && !run.stderr.contains(value),
            "a secret value was printed"
        );
    }
}

fn put(sb: &Sandbox, node_path: &str, contents: &str) {
    let path = sb.path(node_path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn reloads(sb: &Sandbox) -> u32 {
    sb.systemd.state.lock().unwrap().reloads
}

fn restarted(sb: &Sandbox) -> Vec<String> {
    sb.systemd.state.lock().unwrap().restarted.clone()
}

/// The `remove` changes of a `plan --json` report, as (step, target).
fn removals(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["changes"].as_array().unwrap())
        .filter(|c| c["action"] == "remove")
        .map(|c| {
            (
                c["step"].as_str().unwrap().to_string(),
                c["target"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `bootstrap` again and `plan --json`: both must find nothing to do.
async fn assert_converged(sb: &Sandbox) {
    ok(&sb.assert_rerun_changes_nothing().await);
    let plan = sb.run(&["plan", "--json"]).await;
    ok(&plan);
    let report: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(report["changes"], 0, "{}", plan.stdout);
}

/// A server bootstrapped with [`full_server`], its Key Vault holding every secret it names.
async fn converged_full_server() -> Sandbox {
    let secrets = json!({
        SECRET: {"value": JOIN_TOKEN},
        "git-token": {"value": GIT_TOKEN},
        "longhorn-ui-password": {"value": LONGHORN_PW}
    });
    let sim = TestSim::start(scenario(
        json!({"user_data_json": full_server(), "secrets": secrets}),
    ))
    .await;
    let sb = Sandbox::with_sim(sim).await;
    ok(&sb.run(&["bootstrap"]).await);
    sb
}

#[tokio::test]
async fn a_server_losing_git_repo_dns_zone_and_a_secret_drops_exactly_their_files() {
    let sb = converged_full_server().await;

    let gone = [
        format!("{MANIFESTS}/canarie-gitrepo.yaml"),
        format!("{MANIFESTS}/canarie-longhorn-ui.yaml"),
        format!("{MANIFESTS}/canarie-secret-git-auth.yaml"),
    ];
    let kept = [
        format!("{MANIFESTS}/canarie-secret-longhorn-ui-auth.yaml"),
        format!("{MANIFESTS}/canarie-cluster-values.yaml"),
        format!("{MANIFESTS}/canarie-fleet.yaml"),
        "/etc/rancher/rke2/config.yaml.d/10-token.yaml".to_string(),
    ];
    for path in gone.iter().chain(&kept) {
        assert!(sb.path(path).exists(), "{path} was not written");
    }
    // The operator's own files in the agent's directories, including names close to ours.
    let operator = [
        format!("{MANIFESTS}/operator-extra.yaml"),
        format!("{MANIFESTS}/canarie-secret-operator.yaml"),
        "/etc/rancher/rke2/config.yaml.d/50-operator.yaml".to_string(),
        "/etc/systemd/system/rke2-server.service.d/50-operator.conf".to_string(),
    ];
    for path in &operator {
        put(&sb, path, "# the operator's\n");
    }
    let (reloads_before, restarts_before) = (reloads(&sb), restarted(&sb));

    sb.set_config(&reduced_server());
    // plan shows the removals and removes nothing.
    let plan = sb.run(&["plan", "--json"]).await;
    ok(&plan);
    let report: Value = serde_json::from_str(&plan.stdout).unwrap();
    let mut planned = removals(&report);
    planned.sort();
    let mut expected = vec![
        ("server-manifests".to_string(), gone[0].clone()),
        ("server-manifests".to_string(), gone[1].clone()),
        ("cluster-secrets".to_string(), gone[2].clone()),
    ];
    expected.sort();
    assert_eq!(planned, expected, "{}", plan.stdout);
    for path in &gone {
        assert!(sb.path(path).exists(), "plan removed {path}");
    }
    let human = sb.run(&["plan"]).await;
    ok(&human);
    assert!(
        human
            .stdout
            .contains(&format!("remove   {MANIFESTS}/canarie-gitrepo.yaml")),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("stay in the cluster"),
        "plan says RKE2 keeps what a removed manifest applied:\n{}",
        human.stdout
    );

    let run = sb.run(&["bootstrap"]).await;
    ok(&run);
    for path in &gone {
        assert!(!sb.path(path).exists(), "{path} is still there");
    }
    for path in kept.iter().chain(&operator) {
        assert!(sb.path(path).exists(), "{path} was removed");
    }
    for path in &operator {
        assert_eq!(
            std::fs::read_to_string(sb.path(path)).unwrap(),
            "# the operator's\n"
        );
    }
    let values = std::fs::read_to_string(sb.path(&kept[1])).unwrap();
    assert!(!values.contains("k8s.example.com"), "{values}");
    // Manifests are RKE2's deploy controller's business: no reload, no restart.
    assert_eq!(reloads(&sb), reloads_before);
    assert_eq!(restarted(&sb), restarts_before);

    assert_converged(&sb).await;
}

#[tokio::test]
async fn a_server_losing_every_cluster_secret_removes_their_files_without_asking_azure() {
    let sb = converged_full_server().await;
    let operator = format!("{MANIFESTS}/canarie-secret-mine.yaml");
    put(&sb, &operator, "# the operator's\n");

    let mut config = full_server();
    config.as_object_mut().unwrap().remove("cluster_secrets");
    sb.set_config(&config);
    // The step no longer needs Key Vault for anything but the join token: deleting the
    // secrets from the vault must not matter.
    sb.sim.sim.remove_secret("git-token");
    sb.sim.sim.remove_secret("longhorn-ui-password");
    let run = sb.run(&["bootstrap"]).await;
    ok(&run);
    for file in [
        "canarie-secret-git-auth.yaml",
        "canarie-secret-longhorn-ui-auth.yaml",
        // Without the login the Longhorn UI is never public.
        "canarie-longhorn-ui.yaml",
    ] {
        assert!(
            !sb.path(&format!("{MANIFESTS}/{file}")).exists(),
            "{file} is still there:\n{}",
            run.stdout
        );
    }
    assert!(sb.path(&operator).exists(), "not the agent's file");
    assert_converged(&sb).await;
}

#[tokio::test]
async fn a_worker_losing_its_data_disk_drops_the_dropin_and_keeps_the_mount() {
    let mut lab = Lab::new();
    let device = lab.attach(&lab.image("data.img", GIB));
    let mut config = json!({
        "version": 1, "role": "agent", "node_name": "wk-01",
        "cluster": {"server_url": "https://10.20.0.4:9345"},
        "join_token": {"vault": "kv-canarie", "secret": SECRET},
        "data_disk": {"lun": 0, "device": device, "wait_seconds": 0}
    });
    let sim = TestSim::start(scenario(json!({"user_data_json": config}))).await;
    let sb = Sandbox::with_sim_in(sim, lab.path("").as_path()).await;
    ok(&sb.run(&["bootstrap"]).await);

    let dropin = "/etc/systemd/system/rke2-agent.service.d/10-canarie-data-disk.conf";
    let mount_unit = "/etc/systemd/system/var-lib-longhorn.mount";
    let mount_point = sb.path("/var/lib/longhorn");
    assert!(sb.path(dropin).exists());
    assert!(sb.path(mount_unit).exists());
    assert!(lab.is_mounted(&mount_point));
    let unit_before = std::fs::read(sb.path(mount_unit)).unwrap();
    let operator = "/etc/systemd/system/rke2-agent.service.d/50-operator.conf";
    put(&sb, operator, "[Service]\nLimitNOFILE=1048576\n");
    std::fs::write(mount_point.join("replica.img"), b"longhorn data").unwrap();
    let (reloads_before, restarts_before) = (reloads(&sb), restarted(&sb).len());

    config.as_object_mut().unwrap().remove("data_disk");
    sb.set_config(&config);
    let plan = sb.run(&["plan", "--json"]).await;
    ok(&plan);
    let report: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(
        removals(&report),
        [("rke2-config".to_string(), dropin.to_string())],
        "{}",
        plan.stdout
    );

    let run = sb.run(&["bootstrap"]).await;
    ok(&run);
    assert!(!sb.path(dropin).exists(), "{}", run.stdout);
    assert!(sb.path(operator).exists());
    // The disk and its data are never touched: mount unit, mount and files stay.
    assert_eq!(std::fs::read(sb.path(mount_unit)).unwrap(), unit_before);
    assert!(lab.is_mounted(&mount_point));
    assert_eq!(
        std::fs::read(mount_point.join("replica.img")).unwrap(),
        b"longhorn data"
    );
    // systemd forgets the drop-in; config.yaml lost the Longhorn disk label: RKE2 restarts.
    assert_eq!(reloads(&sb), reloads_before + 1, "{}", run.stdout);
    assert_eq!(restarted(&sb).len(), restarts_before + 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("/etc/rancher/rke2/config.yaml"),
        "{}",
        run.stdout
    );

    assert_converged(&sb).await;
}
