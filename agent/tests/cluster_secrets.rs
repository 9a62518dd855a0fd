//! Cluster secrets end to end: the real binary in a `--root` sandbox reads them from
//! azure-sim (real sockets, TLS) with the node's managed identity and seeds them as Secret
//! manifests; a fake systemd on a private bus stands in for RKE2's unit.

mod support;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::examples::server_with_secrets;
use support::sandbox::{Run, Sandbox};
use support::sim::{rules, scenario, TestSim, JOIN_TOKEN, SECRET, VAULT};

const MANIFESTS: &str = "/var/lib/rancher/rke2/server/manifests";

/// One declared secret: its Key Vault name, value, manifest file and Secret.
struct Case {
    kv: &'static str,
    value: &'static str,
    file: &'static str,
    name: &'static str,
    namespace: &'static str,
    keys: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        kv: "git-token",
        value: "ghp_canaryGitToken0123456789abcdef",
        file: "canarie-secret-git-auth.yaml",
        name: "canarie-kube-auth",
        namespace: "fleet-local",
        keys: &["password", "username"],
    },
    Case {
        kv: "grafana-admin-password",
        value: "canary-grafana-Pw-5e7d1c",
        file: "canarie-secret-grafana-admin.yaml",
        name: "grafana-admin",
        namespace: "monitoring",
        keys: &["admin-password", "admin-user"],
    },
    Case {
        kv: "longhorn-ui-password",
        value: "canary-longhorn-Pw-9b2f4a",
        file: "canarie-secret-longhorn-ui-auth.yaml",
        name: "longhorn-ui-auth",
        namespace: "longhorn-system",
        keys: &["auth"],
    },
    Case {
        kv: "external-dns-client-secret",
        value: "canary~dns.Sp-Secret_3c8e",
        file: "canarie-secret-external-dns-azure.yaml",
        name: "external-dns-azure",
        namespace: "external-dns",
        keys: &["azure.json"],
    },
];

async fn sandbox(skip: Option<&str>) -> Sandbox {
    let mut secrets = json!({ SECRET: { "value": JOIN_TOKEN } });
    for case in CASES.iter().filter(|c| Some(c.kv) != skip) {
        secrets[case.kv] = json!({ "value": case.value });
    }
    let sim = TestSim::start(scenario(
        json!({ "user_data_json": server_with_secrets(), "secrets": secrets }),
    ))
    .await;
    Sandbox::with_sim(sim).await
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn decode(v: &serde_yaml_ng::Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("data values are strings"))
            .expect("data values are base64"),
    )
    .unwrap()
}

fn manifest(sb: &Sandbox, file: &str) -> PathBuf {
    sb.path(&format!("{MANIFESTS}/{file}"))
}

fn docs(path: &Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .collect()
}

/// Fails if a cluster secret's value appears in anything the run printed.
fn assert_no_values(run: &Run) {
    run.assert_no_secret();
    for case in CASES {
        for out in [&run.stdout, &run.stderr] {
            assert!(
                !out.contains(case.value) && !out.contains(&b64(case.value)),
                "{} leaked into the output:\n{out}",
                case.kv
            );
        }
    }
}

fn converged(run: &Run) {
    run.assert_success();
    assert_no_values(run);
}

#[tokio::test]
async fn bootstrap_seeds_each_secret_as_a_valid_0600_manifest_and_nowhere_else() {
    let sb = sandbox(None).await;

    let plan = sb.run(&["plan"]).await;
    converged(&plan);
    for case in CASES {
        assert!(
            plan.stdout
                .contains(&format!("create   {MANIFESTS}/{}", case.file)),
            "plan lacks {}:\n{}",
            case.file,
            plan.stdout
        );
        assert!(
            !manifest(&sb, case.file).exists(),
            "plan wrote {}",
            case.file
        );
    }

    let run = sb.run(&["bootstrap"]).await;
    converged(&run);
    assert!(run.stdout.contains("cluster-secrets"), "{}", run.stdout);
    assert_eq!(sb.systemd.started(), vec!["rke2-server.service"]);

    for case in CASES {
        let path = manifest(&sb, case.file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", case.file);
        let docs = docs(&path);
        let secret = docs.last().unwrap();
        assert_eq!(secret["apiVersion"], "v1", "{}", case.file);
        assert_eq!(secret["kind"], "Secret", "{}", case.file);
        assert_eq!(secret["metadata"]["name"], case.name);
        assert_eq!(secret["metadata"]["namespace"], case.namespace);
        let keys: Vec<&str> = secret["data"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, case.keys, "{}", case.file);
        // A Secret in a namespace nothing else creates yet comes with its Namespace.
        if docs.len() == 2 {
            assert_eq!(docs[0]["kind"], "Namespace");
            assert_eq!(docs[0]["metadata"]["name"], case.namespace);
        }
    }

    // The values, as the consumers read them.
    let git = docs(&manifest(&sb, CASES[0].file)).pop().unwrap();
    assert_eq!(git["type"], "kubernetes.io/basic-auth");
    assert_eq!(decode(&git["data"]["password"]), CASES[0].value);
    assert_eq!(decode(&git["data"]["username"]), "x-access-token");
    let grafana = docs(&manifest(&sb, CASES[1].file)).pop().unwrap();
    assert_eq!(decode(&grafana["data"]["admin-password"]), CASES[1].value);
    assert_eq!(decode(&grafana["data"]["admin-user"]), "admin");
    let longhorn = docs(&manifest(&sb, CASES[2].file)).pop().unwrap();
    let htpasswd = decode(&longhorn["data"]["auth"]);
    assert!(
        htpasswd.starts_with("admin:$2y$10$") && htpasswd.ends_with('\n'),
        "{htpasswd}"
    );
    let dns = docs(&manifest(&sb, CASES[3].file)).pop().unwrap();
    let azure: Value = serde_json::from_str(&decode(&dns["data"]["azure.json"])).unwrap();
    assert_eq!(azure["aadClientSecret"], CASES[3].value);
    assert_eq!(azure["aadClientId"], "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
    assert_eq!(azure["resourceGroup"], "canarie-rg");

    // The GitRepo uses the seeded Secret: one name, from cluster.git_repo.auth_secret.
    let gitrepo = docs(&manifest(&sb, "canarie-gitrepo.yaml")).pop().unwrap();
    assert_eq!(gitrepo["spec"]["clientSecretName"], "canarie-kube-auth");

    // Each value (or its base64 form) is in its own file and in no other file of the node.
    for (path, bytes, _, _) in sb.snapshot() {
        let text = String::from_utf8_lossy(&bytes);
        for case in CASES {
            if text.contains(case.value) || text.contains(&b64(case.value)) {
                assert!(
                    path.ends_with(case.file),
                    "{} found in {}",
                    case.kv,
                    path.display()
                );
            }
        }
    }
    // Two runs (plan, bootstrap), each reading every secret once with the run's one
    // managed-identity token, which also read the join token (issue 17: one token per run).
    let reads: Vec<_> = CASES
        .iter()
        .flat_map(|c| sb.sim.statuses(&format!("/secrets/{}", c.kv)))
        .collect();
    assert_eq!(reads, vec![200; 2 * CASES.len()]);
    assert_eq!(sb.sim.statuses("/metadata/identity/oauth2/token").len(), 2);

    // Converged: nothing is rewritten, RKE2 is not restarted.
    assert_no_values(&sb.assert_rerun_changes_nothing().await);
}

#[tokio::test]
async fn a_changed_secret_rewrites_exactly_its_file_and_restarts_nothing() {
    let sb = sandbox(None).await;
    converged(&sb.run(&["bootstrap"]).await);

    for (case, new_value) in [
        (&CASES[1], "rotated-grafana-Pw-77aa01"),
        (&CASES[2], "rotated-longhorn-Pw-0c3b9d"),
        (&CASES[3], "rotated~dns.Sp-Secret_4411"),
    ] {
        let before = sb.snapshot();
        sb.sim.sim.set_secret(case.kv, new_value);
        let run = sb.run(&["bootstrap"]).await;
        converged(&run);
        assert!(!run.stdout.contains(new_value) && !run.stderr.contains(new_value));
        assert_eq!(
            sb.changed_since(&before),
            vec![format!("{MANIFESTS}/{}", case.file)],
            "rotating {}",
            case.kv
        );
        assert!(
            sb.systemd.state.lock().unwrap().restarted.is_empty(),
            "a Secret is applied by RKE2, no restart"
        );
        // And the next run finds nothing to do.
        assert_no_values(&sb.assert_rerun_changes_nothing().await);
    }
}

#[tokio::test]
async fn a_missing_secret_fails_with_its_name_and_vault_before_rke2_starts() {
    let sb = sandbox(Some("external-dns-client-secret")).await;
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(
        run.code, 8,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_no_values(&run);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("failed in step cluster-secrets"))
        .unwrap_or_else(|| panic!("no failure line:\n{}", run.stderr));
    for expected in [
        "cluster_secrets.external_dns_azure",
        "\"external-dns-client-secret\"",
        &format!("vault \"{VAULT}\""),
        "404",
    ] {
        assert!(line.contains(expected), "{expected:?} missing from: {line}");
    }
    assert!(
        sb.systemd.started().is_empty(),
        "RKE2 started without its secrets"
    );
    for case in CASES {
        assert!(!manifest(&sb, case.file).exists(), "{} written", case.file);
    }
}

#[tokio::test]
async fn an_agent_skips_the_step_without_asking_key_vault_for_more() {
    let sb = Sandbox::new(support::sandbox::agent_config()).await;
    let run = sb.run(&["plan", "--json"]).await;
    run.assert_success();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cluster-secrets")
        .expect("the step is reported");
    assert_eq!(step["outcome"], "skipped");
    assert!(step.get("warning").is_none(), "{step}");
    assert_eq!(sb.sim.statuses("/secrets/").len(), 1, "only the join token");
}

#[tokio::test]
async fn an_unreachable_vault_keeps_the_seeded_files_on_a_converged_server() {
    let sb = sandbox(None).await;
    converged(&sb.run(&["bootstrap"]).await);
    let before = sb.snapshot();
    sb.sim
        .sim
        .set_rules(rules(json!([{"endpoint": "vault", "status": 503}])));
    let run = sb.run(&["bootstrap"]).await;
    converged(&run);
    assert!(
        run.stdout
            .contains("warning: keeping the existing cluster Secret files"),
        "{}",
        run.stdout
    );
    assert_eq!(sb.changed_since(&before), Vec::<String>::new());
}
