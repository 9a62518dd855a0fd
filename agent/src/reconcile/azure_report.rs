//! Telling Azure whether the VM is provisioned (docs/operations.md, "Reports to Azure"):
//! what to report when is a pure decision on the node state; sending goes to the
//! WireServer and, where the host's KVP pool exists, to the pool.
//!
//! - Before RKE2's start (which takes minutes on a server's first boot): `NotReady` /
//!   `Provisioning`, so the platform hears from the VM early.
//! - After the run: `Ready` when it converged (RKE2's start job succeeded), else `NotReady` /
//!   `ProvisioningFailed` with the failed step, its error and its hint.
//! - Only while the platform still waits: once `Ready` was accepted, never again
//!   (`azure_report.ready_reported_at` in the node state).

use super::state::{AzureReportRecord, LastReport, NodeState};
use super::Context;
use crate::azure::kvp;
use crate::azure::{Health, HealthState, WireServerClient};

/// When in a run a report is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moment {
    /// Everything before RKE2's start converged; the start comes next.
    BeforeStart,
    /// The run ended: `None` converged, `Some(line)` failed with that failure line.
    Finished(Option<String>),
}

pub const SUB_STATUS_PROVISIONING: &str = "Provisioning";
pub const SUB_STATUS_FAILED: &str = "ProvisioningFailed";

/// What to report at `moment`, or nothing once Ready was reported (the platform no longer
/// waits, and a later boot's failure is the cluster's business, not the platform's).
pub fn decide(state: &NodeState, moment: &Moment) -> Option<Health> {
    match state.azure_report.as_ref() {
        Some(record) if record.ready_reported_at.is_some() => return None,
        // Converged before this agent ever reported: someone else told the platform (a
        // node provisioned by cloud-init, or one bootstrapped by an older agent).
        None if state.has_converged() => return None,
        _ => {}
    }
    Some(match moment {
        Moment::BeforeStart => Health::not_ready(
            SUB_STATUS_PROVISIONING,
            "canarie-agent: node provisioned and configured; starting RKE2 (its first start takes minutes)",
        ),
        Moment::Finished(None) => Health::ready(),
        Moment::Finished(Some(line)) => {
            Health::not_ready(SUB_STATUS_FAILED, &format!("canarie-agent: {line}"))
        }
    })
}

/// Whether this run may report at all: a `--root` sandbox only to an explicit URL, so no
/// test ever sends a packet to Azure's address.
fn client(cx: &Context) -> Option<anyhow::Result<WireServerClient>> {
    let url = cx.wireserver_url.as_deref()?;
    Some(WireServerClient::new(url, cx.wireserver_policy))
}

/// Sends what [`decide`] chose, records the outcome in `state`, and never fails the run:
/// a report that cannot get through is logged and kept in the node state for doctor.
pub async fn send(cx: &Context, state: &mut NodeState, moment: &Moment, vm_id: Option<&str>) {
    let Some(health) = decide(state, moment) else {
        tracing::debug!("Ready was reported before: no report to Azure");
        return;
    };
    if let Moment::Finished(error) = moment {
        write_kvp(cx, error.as_deref(), vm_id);
    }
    let Some(client) = client(cx) else {
        tracing::info!(
            state = health.state.as_str(),
            "no WireServer to report to (a --root sandbox reports only with --wireserver-url)"
        );
        return;
    };
    let result = match client {
        Ok(client) => client.report(&health).await,
        Err(e) => Err(e),
    };
    let at = super::state::now_rfc3339();
    let record = state
        .azure_report
        .get_or_insert_with(AzureReportRecord::default);
    let outcome = match &result {
        Ok(incarnation) => {
            tracing::info!(state = health.state.as_str(), sub_status = health.sub_status.as_deref().unwrap_or("-"), incarnation = %incarnation, "reported to Azure");
            if health.state == HealthState::Ready {
                record.ready_reported_at = Some(at.clone());
            }
            "accepted".to_string()
        }
        Err(e) => {
            let e = format!("{e:#}");
            tracing::warn!(state = health.state.as_str(), error = %e, "could not report to Azure");
            format!("failed: {}", crate::azure::wireserver::trim_description(&e))
        }
    };
    record.last = Some(LastReport {
        at,
        state: health.state.as_str().to_string(),
        sub_status: health.sub_status.clone(),
        description: health.description.clone(),
        outcome,
    });
}

/// The same result in the host's KVP pool, where the pool's directory exists.
fn write_kvp(cx: &Context, error: Option<&str>, vm_id: Option<&str>) {
    let pool = cx.root.join(kvp::KVP_POOL);
    if !pool.parent().is_some_and(std::path::Path::is_dir) {
        return;
    }
    let value = kvp::provisioning_report(
        error,
        vm_id.unwrap_or("unknown"),
        &super::state::now_rfc3339(),
    );
    if let Err(e) = kvp::append(&pool, kvp::PROVISIONING_REPORT_KEY, &value) {
        tracing::warn!(error = %format!("{e:#}"), "could not write the KVP provisioning report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stop_once_ready_was_accepted() {
        let mut state = NodeState::default();
        let before = decide(&state, &Moment::BeforeStart).unwrap();
        assert_eq!(before.sub_status.as_deref(), Some(SUB_STATUS_PROVISIONING));
        assert_eq!(
            decide(&state, &Moment::Finished(None)),
            Some(Health::ready())
        );
        let failed = decide(
            &state,
            &Moment::Finished(Some(
                "bootstrap failed in step join-token: denied; check".into(),
            )),
        )
        .unwrap();
        assert_eq!(failed.sub_status.as_deref(), Some(SUB_STATUS_FAILED));
        assert!(failed.description.unwrap().contains("join-token"));
        // A failed report leaves the platform waiting: report again next time.
        state.azure_report = Some(AzureReportRecord {
            ready_reported_at: None,
            last: None,
        });
        assert!(decide(&state, &Moment::Finished(None)).is_some());
        state.converged_at = Some("t".into());
        assert!(
            decide(&state, &Moment::Finished(None)).is_some(),
            "a failed Ready is sent again"
        );
        state.azure_report = None;
        assert_eq!(
            decide(&state, &Moment::Finished(None)),
            None,
            "converged without us"
        );
        state.azure_report = Some(AzureReportRecord {
            ready_reported_at: Some("t".into()),
            last: None,
        });
        assert_eq!(decide(&state, &Moment::BeforeStart), None);
        assert_eq!(decide(&state, &Moment::Finished(Some("x".into()))), None);
    }
}
