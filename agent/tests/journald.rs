//! The journald path: under systemd (`JOURNAL_STREAM` set) the agent sends its log records
//! to the journal socket instead of stderr. The real binary runs against azure-sim and a fake
//! systemd with a stand-in journald (support/journal.rs); the records are checked for the
//! fields operators filter on, and for secrets (the full secrets sweep, journal runs
//! included, is in secrets_audit.rs).

mod support;

use serde_json::json;
use support::journal::{self, Record};
use support::sandbox::{server_config, Sandbox};
use support::sim::{rules, JOIN_TOKEN, SECRET};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the journald tests make a mount namespace: run them as root (CI does)"
    );
}

/// The records whose MESSAGE is `message`.
fn with_message<'r>(records: &'r [Record], message: &str) -> Vec<&'r Record> {
    records
        .iter()
        .filter(|r| r.get("MESSAGE") == Some(message))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_records_go_to_the_journal_with_their_fields() {
    require_root();
    let sb = Sandbox::new(server_config()).await;
    // Two busy answers from IMDS first, so the retry loop logs its warnings.
    sb.sim
        .sim
        .set_rules(rules(json!([{"preset": "imds_410", "times": 2}])));
    let (run, sent) = journal::run(&sb, &["bootstrap"], &[]).await;
    run.assert_success();
    assert_eq!(
        sent.connects, 1,
        "one connection check, no oversized record"
    );
    let records = &sent.records;
    assert!(records.len() > 10, "few records: {records:#?}");
    // All of them went to the journal: stderr holds no log line.
    assert!(
        !run.stderr.contains("INFO") && !run.stderr.contains("WARN"),
        "log lines on stderr under systemd:\n{}",
        run.stderr
    );

    // Every record: a message, a priority, the agent's identifier, where it was logged.
    for r in records {
        let text = r.text();
        assert!(
            r.get("MESSAGE").is_some_and(|m| !m.is_empty()),
            "no MESSAGE:\n{text}"
        );
        assert!(
            matches!(r.get("PRIORITY"), Some("3" | "4" | "5" | "6" | "7")),
            "PRIORITY:\n{text}"
        );
        assert_eq!(r.get("SYSLOG_IDENTIFIER"), Some("canarie-agent"), "{text}");
        for field in ["TARGET", "CODE_FILE", "CODE_LINE"] {
            assert!(r.get(field).is_some(), "no {field}:\n{text}");
        }
    }

    // The retry warnings: priority warning, with the operation, attempt, delay and cause
    // as fields of their own.
    let retries = with_message(records, "attempt failed, retrying");
    assert_eq!(retries.len(), 2, "{records:#?}");
    for (n, r) in retries.iter().enumerate() {
        let text = r.text();
        assert_eq!(r.get("PRIORITY"), Some("4"), "{text}");
        assert!(
            r.get("F_OPERATION")
                .is_some_and(|op| op.starts_with("IMDS")),
            "{text}"
        );
        assert_eq!(
            r.get("F_ATTEMPT"),
            Some((n + 1).to_string().as_str()),
            "{text}"
        );
        assert!(
            r.get("F_RETRY_IN_MS")
                .is_some_and(|ms| ms.parse::<u64>().is_ok_and(|ms| ms > 0)),
            "{text}"
        );
        assert!(
            r.get("F_ERROR").is_some_and(|e| e.contains("410")),
            "{text}"
        );
    }

    // Each step logs its start, decision and outcome, with the fields docs/operations.md
    // tells operators to filter on (priority 5: tracing-journald maps info to notice).
    for (message, fields) in [
        ("step started", &["F_STEP", "F_MODE"][..]),
        ("step decided", &["F_STEP", "F_CHANGES", "F_DECISION"][..]),
        (
            "step finished",
            &["F_STEP", "F_OUTCOME", "F_CHANGES", "F_DURATION_MS"][..],
        ),
    ] {
        let found = with_message(records, message);
        assert!(found.len() >= 5, "{message}: {records:#?}");
        for r in found {
            let text = r.text();
            assert_eq!(r.get("PRIORITY"), Some("5"), "{text}");
            for field in fields {
                assert!(
                    r.get(field).is_some_and(|v| !v.is_empty()),
                    "no {field}:\n{text}"
                );
            }
        }
    }
    let steps: Vec<&str> = with_message(records, "step finished")
        .iter()
        .map(|r| r.get("F_STEP").unwrap())
        .collect();
    assert!(steps.contains(&"join-token"), "{steps:?}");
    for r in with_message(records, "step finished") {
        assert!(
            matches!(
                r.get("F_OUTCOME"),
                Some("changed" | "unchanged" | "skipped")
            ),
            "{}",
            r.text()
        );
        assert!(r.get("F_DURATION_MS").unwrap().parse::<u64>().is_ok());
    }
    let token_read = with_message(records, "join token read");
    assert_eq!(token_read.len(), 1, "{records:#?}");
    assert_eq!(
        token_read[0].get("F_LENGTH"),
        Some(JOIN_TOKEN.len().to_string().as_str())
    );

    // Not the token itself, anywhere.
    assert!(
        !sent.text().contains(JOIN_TOKEN),
        "the join token in the journal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_an_error_record_with_its_cause() {
    require_root();
    let sb = Sandbox::new(server_config()).await;
    sb.sim.sim.set_secret_enabled(SECRET, false);
    let (run, sent) = journal::run(&sb, &["bootstrap"], &[]).await;
    assert_eq!(
        run.code, 4,
        "exit code of the join-token step:\n{}",
        run.stderr
    );
    // The one-line failure is the command's own output (stderr), not a log record.
    assert!(
        run.stderr.contains("bootstrap failed in step join-token"),
        "{}",
        run.stderr
    );
    let failed = with_message(&sent.records, "step failed");
    assert_eq!(failed.len(), 1, "{:#?}", sent.records);
    let text = failed[0].text();
    assert_eq!(failed[0].get("PRIORITY"), Some("3"), "{text}");
    assert_eq!(failed[0].get("F_STEP"), Some("join-token"), "{text}");
    assert_eq!(failed[0].get("F_OUTCOME"), Some("failed"), "{text}");
    assert!(
        failed[0]
            .get("F_ERROR")
            .is_some_and(|e| e.contains("disabled")),
        "the cause: {text}"
    );
    assert!(!sent.text().contains(JOIN_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_journal_socket_the_records_go_to_stderr() {
    require_root();
    let sb = Sandbox::new(server_config()).await;
    let cmd = journal::without_journald(&sb.command(&["plan"]));
    let run = support::sandbox::Run::from_output(
        tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("unshare runs the canarie-agent binary"),
    );
    run.assert_success();
    // JOURNAL_STREAM is set but no journald listens: the logs must not vanish.
    assert!(
        run.stderr.contains("INFO") && run.stderr.contains("step finished"),
        "no log lines on stderr:\n{}",
        run.stderr
    );
}
