//! The shipped systemd units: the agent's ordering decision (no deadlock with RKE2) and a
//! start timeout above the agent's own deadlines, computed from the CLI's defaults so the
//! two cannot drift apart; the SSH host-key unit's conditions, from the agent's key types.

use canarie_agent::azure::RetryPolicy;
use canarie_agent::cli::Cli;
use clap::CommandFactory;
use std::time::Duration;

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deb/canarie-agent.service"
));

const HOST_KEYS_UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deb/canarie-ssh-host-keys.service"
));

/// Values of `key=` in `[section]` of the agent's unit, in order (comments skipped).
fn values(section: &str, key: &str) -> Vec<String> {
    values_in(UNIT, section, key)
}

fn values_in(unit: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
        } else if let Some((k, v)) = line.split_once('=') {
            if current == section && k == key {
                out.push(v.to_owned());
            }
        }
    }
    out
}

fn one(section: &str, key: &str) -> String {
    let v = values(section, key);
    assert_eq!(v.len(), 1, "{key}= in [{section}]: {v:?}");
    v[0].clone()
}

fn default_secs(flag: &str) -> u64 {
    let cmd = Cli::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(flag))
        .unwrap_or_else(|| panic!("no --{flag}"));
    arg.get_default_values()[0]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn oneshot_after_the_network_service_and_never_before_rke2() {
    assert_eq!(one("Service", "Type"), "oneshot");
    assert_eq!(one("Service", "RemainAfterExit"), "yes");
    assert_eq!(
        one("Service", "ExecStart"),
        "/usr/bin/canarie-agent bootstrap"
    );
    assert!(Cli::command().find_subcommand("bootstrap").is_some());
    let words = |key| -> Vec<String> {
        values("Unit", key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    // The agent waits for its own route to IMDS (azure::route), not for every link; it
    // still pulls the milestone in, for RKE2's units, which are ordered after it.
    assert_eq!(
        words("After"),
        ["network.target", "dbus.service", "cloud-init.service"]
    );
    assert_eq!(words("Wants"), ["network-online.target"]);
    // The agent starts RKE2 and waits for the job: any ordering or binding to the RKE2
    // units would deadlock (Before=) or let systemd start RKE2 on its own (Wants=/Requires=).
    for key in [
        "Before",
        "After",
        "Wants",
        "Requires",
        "BindsTo",
        "PartOf",
        "Requisite",
    ] {
        assert!(
            !words(key).iter().any(|u| u.starts_with("rke2")),
            "{key}= names an RKE2 unit"
        );
    }
    assert_eq!(one("Service", "StandardOutput"), "journal+console");
    assert_eq!(one("Service", "StandardError"), "journal+console");
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn start_timeout_is_above_the_agents_own_deadlines() {
    let timeout: u64 = one("Service", "TimeoutStartSec").parse().unwrap();
    // A retry loop gives up when the next attempt could not start before its deadline, so
    // one call lasts at most deadline + one attempt.
    let imds =
        Duration::from_secs(default_secs("imds-deadline")) + RetryPolicy::IMDS.attempt_timeout;
    let vault =
        Duration::from_secs(default_secs("vault-deadline")) + RetryPolicy::VAULT.attempt_timeout;
    let rke2 = Duration::from_secs(default_secs("rke2-start-timeout"));
    let wire = canarie_agent::azure::wireserver::WIRESERVER_POLICY;
    let early = canarie_agent::reconcile::Context::new(Default::default(), String::new())
        .progress_report_deadline
        + wire.attempt_timeout;
    let report = wire.deadline + wire.attempt_timeout;
    // config (userData), provisioning (instance metadata), join-token (token + secret; the
    // disk waits beside it), cluster-secrets on servers (token + secrets), the report
    // before RKE2's start, start-rke2, the final report.
    let worst = imds + imds + (imds + vault) + (imds + vault) + early + rke2 + report;
    assert_eq!(
        worst.as_secs(),
        3400,
        "docs/packaging.md shows this sum; update both"
    );
    // Room for the disk's format or fsck, daemon-reload and file writes.
    let margin = Duration::from_secs(120);
    assert!(
        Duration::from_secs(timeout) >= worst + margin,
        "TimeoutStartSec={timeout} is not above the agent's worst case {}s + {}s",
        worst.as_secs(),
        margin.as_secs()
    );
}

#[test]
fn host_keys_are_made_before_sshd_when_one_is_missing_and_after_cloud_init() {
    let v = |section, key| values_in(HOST_KEYS_UNIT, section, key);
    let mut wanted: Vec<String> = canarie_agent::provision::HOST_KEY_TYPES
        .iter()
        .map(|t| format!("|!{}", canarie_agent::provision::host_key_path(t)))
        .collect();
    wanted.insert(0, "/usr/sbin/sshd".into());
    assert_eq!(v("Unit", "ConditionPathExists"), wanted);
    assert_eq!(v("Unit", "Before"), ["ssh.service"]);
    assert_eq!(v("Unit", "After"), ["cloud-init.service"]);
    assert_eq!(v("Service", "ExecStart"), ["/usr/bin/ssh-keygen -A"]);
    // Beside the bootstrap, never ahead of it on the CPU.
    assert_eq!(v("Service", "CPUSchedulingPolicy"), ["idle"]);
    assert_eq!(v("Service", "IOSchedulingClass"), ["idle"]);
    assert_eq!(v("Service", "Nice"), ["19"]);
    assert_eq!(v("Service", "ReadWritePaths"), ["/etc/ssh"]);
    assert_eq!(v("Install", "WantedBy"), ["multi-user.target"]);
}

#[test]
fn every_line_of_the_units_is_explained_in_the_docs() {
    let docs = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/packaging.md"
    ));
    let start = docs
        .find("## The unit, line by line")
        .expect("docs/packaging.md has the section");
    let section = &docs[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut missing = Vec::new();
    for line in UNIT.lines().chain(HOST_KEYS_UNIT.lines()).map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let key = line.split_once('=').expect("key=value").0;
        if !section.contains(&format!("`{key}=")) && !missing.contains(&key) {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/packaging.md (\"The unit, line by line\") does not explain {missing:?}"
    );
}
