//! `last-run`: the last bootstrap run recorded in the node state. For a failed run: the
//! step, the exit code the run ended with, and the checks that examine what that step
//! needs. Steps, exit codes and what each step does come from the reconciler's step table
//! ([`StepId`]), so they cannot drift from what bootstrap does; which checks examine a step
//! is doctor's own [`examined_by`], which names every step (the compiler holds it to that).

use super::{cloud, Options, Outcome, Spec};
use super::{
    CONFIG, DATA_DISK, DATA_DISK_MOUNT, DISK_SPACE, IDENTITY, IMDS, JOIN_TOKEN_FILE, KEY_VAULT,
    RKE2_CONFIG, RKE2_JOURNAL, RKE2_MANIFESTS, RKE2_UNIT, SERVER_STATE_DISK,
    SERVER_STATE_DISK_MOUNT,
};
use crate::reconcile::state::{self, NodeState, RunRecord, StepRecord, STATE_FILE};
use crate::reconcile::StepId;
use std::time::SystemTime;

/// The checks that examine what `step` needs, most telling first.
fn examined_by(step: StepId) -> &'static [Spec] {
    match step {
        StepId::Config => &[CONFIG, IMDS],
        StepId::JoinToken => &[IDENTITY, KEY_VAULT, JOIN_TOKEN_FILE],
        StepId::DataDisk => &[DATA_DISK, DATA_DISK_MOUNT],
        StepId::ServerStateDisk => &[SERVER_STATE_DISK, SERVER_STATE_DISK_MOUNT],
        StepId::Rke2Config => &[RKE2_CONFIG, DISK_SPACE],
        StepId::ServerManifests => &[RKE2_MANIFESTS, DISK_SPACE],
        // The same identity and vault as the join token: `key-vault` shows whether the
        // identity may read the vault at all.
        StepId::ClusterSecrets => &[IDENTITY, KEY_VAULT],
        StepId::NodePassword => &[DISK_SPACE],
        StepId::StartRke2 => &[RKE2_UNIT, RKE2_JOURNAL],
    }
}

/// The exit code bootstrap ends with when the step named `step` fails; `None` for a step
/// this binary does not know.
fn exit_code(step: &str) -> Option<i32> {
    StepId::from_name(step).map(StepId::exit_code)
}

/// What to do about the failed step `failed`, from what the run recorded of it.
fn failure_hint(failed: &StepRecord) -> String {
    let name = failed.name.as_str();
    let restart = "after fixing the cause, `systemctl restart canarie-agent`";
    let log = format!("the step's log: `journalctl -u canarie-agent -b F_STEP={name}`");
    let Some(step) = StepId::from_name(name) else {
        return format!("this doctor does not know step {name} (a node state written by another agent version?): the failing checks above name the cause; {restart}; {log}");
    };
    let checks: Vec<&str> = examined_by(step).iter().map(|s| s.id).collect();
    let mut hint = format!(
        "step {step} {}: see check{} {} above; {restart}; {log}",
        step.info().does,
        if checks.len() == 1 { "" } else { "s" },
        checks.join(", ")
    );
    if let Some(named) = &failed.secret {
        hint = format!(
            "Key Vault secret {} ({}) in vault {}: {}; {hint}",
            named.secret,
            named.entry,
            named.vault,
            cloud::vault_hint(
                named.cause(),
                &named.vault,
                &named.secret,
                &format!("{}.secret", named.entry)
            ),
        );
    }
    hint
}

/// `last-run`: the last bootstrap run recorded in the node state.
pub(super) fn last_run(opts: &Options, state: Option<&NodeState>) -> Outcome {
    let Some(state) = state else {
        return Outcome::warn(
            format!("no bootstrap has run here ({STATE_FILE} is missing or unreadable)"),
            "`systemctl status canarie-agent`; its log: `journalctl -u canarie-agent -b`",
        );
    };
    // The identity is the SMBIOS UUID, which only root may read: as another user the
    // fallback id would differ from the recorded one for no reason.
    if opts.as_root {
        if let Ok(id) = state::machine_id(&opts.cx.root) {
            if id != state.machine_id {
                return Outcome::warn(
                    "the node state was written by another machine (a cloned image?): the next run bootstraps this node from scratch",
                    "`systemctl restart canarie-agent`",
                );
            }
        }
    }
    let Some(run) = &state.last_run else {
        return Outcome::warn(
            format!("{STATE_FILE} records no run"),
            "`systemctl restart canarie-agent`",
        );
    };
    judge(run)
}

fn judge(run: &RunRecord) -> Outcome {
    let details = vec![run
        .steps
        .iter()
        .map(|s| format!("{} {} {}", s.name, s.outcome, human_ms(s.duration_ms)))
        .collect::<Vec<_>>()
        .join(" · ")];
    let when = format!("{}{}", run.finished_at, ago(&run.finished_at));
    let took = duration(run)
        .map(|d| format!(" in {d}"))
        .unwrap_or_default();
    let source = run
        .config_source
        .as_deref()
        .map(|s| format!(", config from {s}"))
        .unwrap_or_default();
    if run.result != "converged" {
        let failed = run.steps.iter().find(|s| s.outcome == "failed");
        let step = failed.map(|s| s.name.as_str()).unwrap_or_default();
        let code = exit_code(step)
            .map(|c| format!(", exit code {c}"))
            .unwrap_or_default();
        let error = run.error.as_deref().unwrap_or_default();
        // The recorded error is the run's failure line, which names the step itself.
        let finding = if error.is_empty() {
            let in_step = failed
                .map(|s| format!(" in step {}", s.name))
                .unwrap_or_default();
            format!("failed{in_step} at {when}{took}{code}")
        } else {
            format!("at {when}{took}{code}: {error}")
        };
        let hint = match failed {
            Some(failed) => failure_hint(failed),
            None => "the failing checks above name the cause; after fixing it, `systemctl restart canarie-agent`; the run's log: `journalctl -u canarie-agent -b`".into(),
        };
        return Outcome::fail(finding, hint).with_details(details);
    }
    if run.steps.iter().any(|s| s.outcome == "kept") {
        return Outcome::warn(
            format!("converged from local state at {when}{took}: IMDS or Key Vault did not answer at boot"),
            "the node runs on its last converged config and token; once Azure answers, `systemctl restart canarie-agent` re-reads them",
        )
        .with_details(details);
    }
    Outcome::ok(format!("converged at {when}{took}{source}")).with_details(details)
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn duration(run: &RunRecord) -> Option<String> {
    let start = humantime::parse_rfc3339(&run.started_at).ok()?;
    let end = humantime::parse_rfc3339(&run.finished_at).ok()?;
    // The record has whole seconds.
    let d = end.duration_since(start).ok()?;
    Some(match d.as_secs() {
        0 => "under 1 s".to_string(),
        s => format!("{s} s"),
    })
}

fn ago(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else {
        return String::new();
    };
    match SystemTime::now().duration_since(t) {
        Ok(d) if d.as_secs() < 120 => format!(" ({} s ago)", d.as_secs()),
        Ok(d) if d.as_secs() < 7200 => format!(" ({} min ago)", d.as_secs() / 60),
        Ok(d) if d.as_secs() < 2 * 86400 => format!(" ({} h ago)", d.as_secs() / 3600),
        Ok(d) => format!(" ({} days ago)", d.as_secs() / 86400),
        Err(_) => " (in the future: check the clock)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Status, CHECKS};

    /// A run that failed in `step` with the failure line bootstrap records.
    fn failed_in(step: &str, cause: &str) -> RunRecord {
        RunRecord {
            started_at: "2025-11-26T09:10:32Z".into(),
            finished_at: "2025-11-26T09:10:33Z".into(),
            result: "failed".into(),
            error: Some(format!(
                "bootstrap failed in step {step}: {cause}; what to do"
            )),
            config_source: Some("IMDS userData".into()),
            steps: vec![StepRecord {
                name: step.into(),
                outcome: "failed".into(),
                changes: 0,
                duration_ms: 12,
                secret: None,
            }],
        }
    }

    #[test]
    fn every_step_and_every_exit_code_is_explained() {
        let mut codes = Vec::new();
        for step in StepId::ALL {
            let checks = examined_by(step);
            assert!(!checks.is_empty(), "{step} points at no check");
            for check in checks {
                assert!(
                    CHECKS.contains(check),
                    "{step}: {} is not a check",
                    check.id
                );
            }
            let c = exit_code(step.name()).unwrap();
            codes.push(c);
            let o = judge(&failed_in(step.name(), "it broke"));
            assert_eq!(o.status, Status::Fail);
            assert!(
                o.finding
                    .contains(&format!(", exit code {c}: bootstrap failed in step {step}")),
                "{}",
                o.finding
            );
            let hint = o.hint.unwrap();
            assert!(
                hint.contains(&format!("step {step} {}", step.info().does)),
                "{hint}"
            );
            assert!(hint.contains(checks[0].id), "{hint}");
            assert!(hint.contains(&format!("F_STEP={step}")), "{hint}");
        }
        // Every failure exit code bootstrap has is reached by a step doctor explains.
        for expected in crate::reconcile::steps::failure_exit_codes() {
            assert!(
                codes.contains(&expected),
                "exit code {expected} has no step: {codes:?}"
            );
        }
        assert_eq!(
            exit_code("cluster-secrets"),
            Some(StepId::ClusterSecrets.exit_code())
        );
        assert_eq!(exit_code("no-such-step"), None);
        let o = judge(&failed_in("no-such-step", "it broke"));
        assert!(o.hint.unwrap().contains("does not know step no-such-step"));
    }

    /// docs/operations.md's step table gives each step's exit code and checks as the step
    /// table and `examined_by` do.
    #[test]
    fn the_operations_guide_lists_each_steps_code_and_checks() {
        let docs = include_str!("../../../docs/operations.md");
        for step in StepId::ALL {
            let prefix = format!("| `{step}` | ");
            // The check table has rows of the same name; a step's row goes on with its code.
            let row = docs
                .lines()
                .find(|l| {
                    l.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
                .unwrap_or_else(|| panic!("docs/operations.md has no row for step {step}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cells[2], step.exit_code().to_string(), "{row}");
            let checks: Vec<String> = examined_by(step)
                .iter()
                .map(|c| format!("`{}`", c.id))
                .collect();
            assert_eq!(cells[3], checks.join(", "), "{row}");
        }
    }

    #[test]
    fn a_cluster_secret_refusal_names_the_secret_and_the_fix() {
        use crate::azure::{VaultCause, VaultRefusal};
        use crate::reconcile::inputs::SecretRead;
        use crate::reconcile::state::SecretFailure;
        // The error chain the step ends with, and the run recorded from it.
        let failed = |status: u16, codes: &[&str]| {
            let refusal = VaultRefusal {
                vault: "kv-c".into(),
                secret: "grafana-admin".into(),
                status,
                codes: codes.iter().map(|c| c.to_string()).collect(),
                message: "A secret with (name/id) grafana-admin was not found in this key vault."
                    .into(),
                cause: VaultCause::of(status, codes).unwrap(),
                advice: "create it".into(),
            };
            let err = anyhow::Error::new(refusal)
                .context("Key Vault read of secret \"grafana-admin\" in vault \"kv-c\" failed")
                .context(SecretRead {
                    entry: "cluster_secrets.grafana_admin".into(),
                    secret: "grafana-admin".into(),
                    vault: "kv-c".into(),
                });
            let mut run = failed_in("cluster-secrets", &format!("{err:#}"));
            run.steps[0].secret = SecretFailure::of(&err);
            run
        };
        let missing = failed(404, &["Not Found", "SecretNotFound"]);
        let named = missing.steps[0].secret.as_ref().unwrap();
        assert_eq!(
            (
                named.entry.as_str(),
                named.secret.as_str(),
                named.vault.as_str()
            ),
            ("cluster_secrets.grafana_admin", "grafana-admin", "kv-c")
        );
        let hint = judge(&missing).hint.unwrap();
        assert!(hint.starts_with("Key Vault secret grafana-admin (cluster_secrets.grafana_admin) in vault kv-c: create secret grafana-admin in vault kv-c"), "{hint}");
        assert!(
            hint.contains("fix cluster_secrets.grafana_admin.secret"),
            "{hint}"
        );
        assert!(hint.contains("see checks identity, key-vault"), "{hint}");

        let forbidden = failed(403, &["Forbidden", "ForbiddenByRbac"]);
        let hint = judge(&forbidden).hint.unwrap();
        assert!(
            hint.contains("'Key Vault Secrets User' role on vault kv-c"),
            "{hint}"
        );

        // No secret named (the token could not be had): the checks still point the way.
        let hint = judge(&failed_in(
            "cluster-secrets",
            "getting a managed-identity token for Key Vault: Identity not found",
        ))
        .hint
        .unwrap();
        assert!(
            hint.starts_with("step cluster-secrets reads cluster_secrets"),
            "{hint}"
        );
    }
}
