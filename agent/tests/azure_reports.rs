//! Reports to Azure end to end: the real binary in a `--root` sandbox reports to
//! azure-sim's WireServer (`NotReady`/`Provisioning` before RKE2's start, `Ready` after it,
//! `NotReady`/`ProvisioningFailed` naming the failed step), stops once Ready was accepted,
//! survives the WireServer's faults, and writes the metrics file after every bootstrap.

mod support;

use support::dbus::StartOutcome;
use support::sandbox::{server_config, Sandbox};
use support::sim::{rules, JOIN_TOKEN};

fn reports(sb: &Sandbox) -> Vec<(String, Option<String>, Option<String>)> {
    sb.sim
        .sim
        .health_reports()
        .into_iter()
        .map(|h| (h.state, h.sub_status, h.description))
        .collect()
}

async fn bootstrap(sb: &Sandbox) -> support::sandbox::Run {
    let url = sb.sim.sim.wireserver_url();
    sb.run(&["bootstrap", "--wireserver-url", &url]).await
}

fn state(sb: &Sandbox) -> serde_json::Value {
    let text = std::fs::read_to_string(sb.path("/var/lib/canarie-agent/state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn ready_after_the_start_and_never_again() {
    let sb = Sandbox::new(server_config()).await;
    // The WireServer is flaky: a closed connection, a 503, and the incarnation moving on
    // between the goal state read and the report.
    sb.sim.sim.set_rules(rules(serde_json::json!([
        {"endpoint": "wireserver", "close": true, "times": 1},
        {"endpoint": "health", "status": 503, "times": 1},
        {"preset": "wire_new_incarnation", "times": 2}
    ])));
    let run = bootstrap(&sb).await;
    run.assert_success();
    let got = reports(&sb);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "NotReady");
    assert_eq!(got[0].1.as_deref(), Some("Provisioning"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_deref()), ("Ready", None));
    assert!(
        sb.sim.sim.requests().iter().any(|r| r.status == 410),
        "the stale report was refused and sent again"
    );
    let recorded = &state(&sb)["azure_report"];
    assert!(recorded["ready_reported_at"].is_string(), "{recorded}");
    assert_eq!(recorded["last"]["outcome"], "accepted");

    // The platform no longer waits: a later boot reports nothing.
    let again = bootstrap(&sb).await;
    again.assert_success();
    assert_eq!(reports(&sb).len(), 2);

    let metrics =
        std::fs::read_to_string(sb.path("/var/lib/canarie-agent/metrics/canarie_agent.prom"))
            .unwrap();
    assert!(
        metrics.contains("\ncanarie_agent_last_run_success 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("canarie_agent_step_duration_seconds{step=\"start-rke2\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(JOIN_TOKEN));
}

#[tokio::test]
async fn a_failed_bootstrap_reports_the_step_and_its_hint() {
    let sb = Sandbox::new(server_config()).await;
    sb.sim
        .sim
        .set_rules(rules(serde_json::json!([{"preset": "kv_404"}])));
    let run = bootstrap(&sb).await;
    assert_ne!(run.code, 0);
    let got = reports(&sb);
    assert_eq!(
        got.len(),
        1,
        "no progress report before a start that never came: {got:?}"
    );
    let (state_name, sub, description) = &got[0];
    assert_eq!(
        (state_name.as_str(), sub.as_deref()),
        ("NotReady", Some("ProvisioningFailed"))
    );
    let description = description.as_deref().unwrap();
    assert!(description.contains("join-token"), "{description}");
    assert!(
        description.contains("Key Vault Secrets User"),
        "the hint: {description}"
    );
    assert!(!description.contains(JOIN_TOKEN));
    let metrics =
        std::fs::read_to_string(sb.path("/var/lib/canarie-agent/metrics/canarie_agent.prom"))
            .unwrap();
    assert!(
        metrics.contains("\ncanarie_agent_last_run_success 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "\ncanarie_agent_last_run_exit_code {}\n",
        run.code
    )));

    // A start job that fails: Provisioning before it, then ProvisioningFailed, not Ready.
    let sb = Sandbox::new(server_config()).await;
    sb.systemd
        .set_outcome("rke2-server.service", StartOutcome::Failed);
    let run = bootstrap(&sb).await;
    assert_ne!(run.code, 0);
    let got = reports(&sb);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1.as_deref(), Some("Provisioning"));
    assert_eq!(got[1].1.as_deref(), Some("ProvisioningFailed"));
    assert!(got[1].2.as_deref().unwrap().contains("start-rke2"));
    assert!(state(&sb)["azure_report"]["ready_reported_at"].is_null());
}

#[tokio::test]
async fn a_sandbox_without_a_wireserver_url_reports_nothing() {
    let sb = Sandbox::new(server_config()).await;
    sb.run(&["bootstrap"]).await.assert_success();
    assert!(reports(&sb).is_empty());
    assert!(sb
        .sim
        .sim
        .requests()
        .iter()
        .all(|r| r.service != "wireserver"));
}
