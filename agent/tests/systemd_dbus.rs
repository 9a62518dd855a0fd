//! The systemd client against a private dbus-daemon with a fake Manager.

mod support;

use canarie_agent::systemd::Systemd;
use std::time::Duration;
use support::dbus::{FakeSystemd, StartOutcome};

/// A fake manager on its own bus, and the client connected to it.
async fn connected() -> (FakeSystemd, Systemd) {
    let fake = FakeSystemd::start().await;
    let sd = Systemd::connect(Some(&fake.address)).await.unwrap();
    (fake, sd)
}

/// Starts `unit` on a fake manager whose start job for it ends with `outcome`, waiting at
/// most `deadline`; the start must fail. Its error chain.
async fn failed_start(unit: &str, outcome: StartOutcome, deadline: Duration) -> String {
    let (fake, sd) = connected().await;
    fake.set_outcome(unit, outcome);
    let err = sd.start_and_wait(unit, deadline).await.unwrap_err();
    format!("{err:#}")
}

#[tokio::test]
async fn start_success_waits_for_the_job() {
    let (fake, sd) = connected().await;
    sd.start_and_wait("rke2-server.service", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(fake.started(), vec!["rke2-server.service"]);
    assert!(sd
        .unit_state("rke2-server.service")
        .await
        .unwrap()
        .is_active());
}

#[tokio::test]
async fn start_failure_reports_the_result_and_unit_state() {
    let msg = failed_start(
        "rke2-agent.service",
        StartOutcome::Failed,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        msg.contains("the start job of rke2-agent.service ended with result \"failed\""),
        "{msg}"
    );
    assert!(msg.contains("unit is failed (failed)"), "{msg}");
    assert!(msg.contains("journalctl -u rke2-agent.service"), "{msg}");
}

#[tokio::test]
async fn a_job_that_never_ends_hits_the_deadline() {
    let msg = failed_start(
        "rke2-server.service",
        StartOutcome::Hang,
        Duration::from_millis(500),
    )
    .await;
    assert!(msg.contains("did not finish within 0.5s"), "{msg}");
    assert!(msg.contains("unit is inactive"), "{msg}");
}

#[tokio::test]
async fn restart_is_a_job_too() {
    let (fake, sd) = connected().await;
    sd.restart_and_wait("rke2-server.service", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        fake.state.lock().unwrap().restarted,
        vec!["rke2-server.service"]
    );
    assert!(fake.started().is_empty());
}

#[tokio::test]
async fn reload_reaches_the_manager() {
    let (fake, sd) = connected().await;
    sd.reload().await.unwrap();
    sd.reload().await.unwrap();
    assert_eq!(fake.state.lock().unwrap().reloads, 2);
}

#[tokio::test]
async fn a_written_unit_is_reloaded_only_when_systemd_holds_an_older_copy() {
    // The data disk's mount unit: started right after the agent wrote it.
    let unit = "var-lib-longhorn.mount";
    let (fake, sd) = connected().await;
    sd.start_written_unit(unit, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        fake.state.lock().unwrap().reloads,
        0,
        "a unit systemd reads fresh"
    );
    fake.state
        .lock()
        .unwrap()
        .need_reload
        .insert(unit.to_string());
    sd.start_written_unit(unit, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        fake.state.lock().unwrap().reloads,
        1,
        "NeedDaemonReload: reload first"
    );
    assert_eq!(fake.started(), vec![unit, unit]);
}

#[tokio::test]
async fn a_bad_bus_address_is_a_clear_error() {
    let err = Systemd::connect(Some("unix:path=/nonexistent/bus"))
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("connecting to the D-Bus at unix:path=/nonexistent/bus"));
}

#[tokio::test]
async fn the_hostname_goes_through_hostnamed_once() {
    use canarie_agent::paths::Root;
    use canarie_agent::provision::{self, Desired, HostnameTarget, Task};
    use canarie_agent::systemd::hostname::Hostnamed;

    let fake = FakeSystemd::start().await;
    let hostnamed = Hostnamed::connect(Some(&fake.address)).await.unwrap();
    assert_eq!(hostnamed.static_hostname().await.unwrap(), "");

    // The provisioning step's own observe/decide/apply, against that hostnamed.
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let target = HostnameTarget::Hostnamed(Some(fake.address.clone()));
    let desired = Desired {
        user: "ops".into(),
        hostname: "wk-01".into(),
        keys: Default::default(),
        password_login_requested: false,
    };
    let seen = provision::observe(&root, &desired, &target).await.unwrap();
    let decision = provision::decide(&desired, &seen).unwrap();
    assert!(decision.tasks.contains(&Task::SetHostname), "{decision:?}");
    provision::apply(&root, &desired, &seen, &target, &Task::SetHostname)
        .await
        .unwrap();
    assert_eq!(hostnamed.static_hostname().await.unwrap(), "wk-01");
    let seen = provision::observe(&root, &desired, &target).await.unwrap();
    let decision = provision::decide(&desired, &seen).unwrap();
    assert!(!decision.tasks.contains(&Task::SetHostname), "{decision:?}");
    assert_eq!(fake.state.lock().unwrap().hostname_sets, 1);
    assert!(
        !root.join("/etc/hostname").exists(),
        "hostnamed writes it, not the agent"
    );
}
