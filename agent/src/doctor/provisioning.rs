//! Checks `provisioning` (the VM as Azure asked for it: admin user, keys, hostname, SSH host
//! keys, root filesystem) and `azure-report` (what the agent told Azure's WireServer).

use super::{Options, Outcome};
use crate::provision::{self, Desired, HostnameTarget};
use crate::reconcile::state::NodeState;

const RERUN: &str = "`canarie-agent plan` shows what the provisioning step would change; `systemctl restart canarie-agent` converges it";

/// The provisioning step's decision, read-only: nothing to do means provisioned.
pub(super) async fn provisioned(opts: &Options, imds_up: bool) -> (Outcome, ()) {
    let root = &opts.cx.root;
    if let Some(why) = provision::cloud_init_provisions(root) {
        return (Outcome::skipped(format!("{why} (not the agent)")), ());
    }
    if !opts.as_root {
        return (Outcome::needs_root("reads /etc/shadow"), ());
    }
    if !imds_up {
        return (
            Outcome::skipped("IMDS is unreachable (see check imds): the VM's osProfile is unknown"),
            (),
        );
    }
    let compute = match opts.cx.imds(false) {
        Ok(imds) => match imds.instance().await {
            Ok(meta) => meta.compute,
            Err(e) => {
                return (
                    Outcome::fail(format!("IMDS instance metadata: {e:#}"), "see check imds"),
                    (),
                )
            }
        },
        Err(e) => return (Outcome::fail(format!("{e:#}"), "check --imds-url"), ()),
    };
    let desired = match Desired::from_metadata(&compute) {
        Ok(d) => d,
        Err(e) => return (Outcome::fail(format!("{e:#}"), RERUN), ()),
    };
    let target = if root.is_host() {
        HostnameTarget::Hostnamed(opts.cx.dbus_address.clone())
    } else {
        HostnameTarget::File
    };
    let seen = match provision::observe(root, &desired, &target).await {
        Ok(seen) => seen,
        Err(e) => return (Outcome::fail(format!("{e:#}"), RERUN), ()),
    };
    let decision = match provision::decide(&desired, &seen) {
        Ok(d) => d,
        Err(e) => return (Outcome::fail(format!("{e:#}"), RERUN), ()),
    };
    let mut details: Vec<String> = decision.notes.clone();
    if decision.tasks.is_empty() {
        let keys: usize = desired.keys.values().map(|k| k.lines().count()).sum();
        let outcome = Outcome::ok(format!(
            "admin user {} with {keys} SSH key(s), hostname {}, host keys present",
            desired.user, desired.hostname
        ));
        return (outcome.with_details(details), ());
    }
    details.extend(decision.tasks.iter().map(|t| format!("to do: {t:?}")));
    let outcome = Outcome::fail(
        format!(
            "{} provisioning change(s) outstanding (admin user {}, hostname {})",
            decision.tasks.len(),
            desired.user,
            desired.hostname
        ),
        RERUN,
    );
    (outcome.with_details(details), ())
}

/// What the node state records of the reports to the WireServer.
pub(super) fn azure_report(state: Option<&NodeState>) -> Outcome {
    let Some(record) = state.and_then(|s| s.azure_report.as_ref()) else {
        return Outcome::skipped(
            "no report to Azure recorded (no bootstrap has reported yet, or no WireServer URL)",
        );
    };
    let last = record.last.as_ref().map(|l| {
        let mut s = format!("last report {} at {}: {}", l.state, l.at, l.outcome);
        if let Some(sub) = &l.sub_status {
            s.push_str(&format!(" ({sub})"));
        }
        if let Some(d) = &l.description {
            s.push_str(&format!(": {d}"));
        }
        s
    });
    let details: Vec<String> = last.iter().cloned().collect();
    if let Some(at) = &record.ready_reported_at {
        return Outcome::ok(format!("Ready reported to Azure at {at}")).with_details(details);
    }
    let Some(l) = &record.last else {
        return Outcome::warn(
            "no report to Azure recorded yet",
            "`journalctl -u canarie-agent -b` shows the WireServer attempts",
        );
    };
    if l.outcome != "accepted" {
        return Outcome::fail(
            format!("the last report ({} at {}) did not reach Azure: {}", l.state, l.at, l.outcome),
            "check that 168.63.129.16 is reachable from the node (doctor's imds check, NSG rules); the next bootstrap reports again",
        )
        .with_details(details);
    }
    if l.sub_status.as_deref() == Some("Provisioning") {
        return Outcome::warn(
            format!("Azure was told the VM is still provisioning ({} at {}); Ready follows RKE2's start", l.state, l.at),
            "see check rke2-unit; Ready is reported once a bootstrap converges",
        )
        .with_details(details);
    }
    Outcome::fail(
        format!(
            "Azure was told {} ({}) at {}, never Ready",
            l.state,
            l.sub_status.as_deref().unwrap_or("-"),
            l.at
        ),
        "see check last-run for the failed step; Ready is reported once a bootstrap converges",
    )
    .with_details(details)
}
