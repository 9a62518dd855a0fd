//! The doctor's report: one entry per check, a summary, and its two renderings (text for a
//! person at a terminal, JSON for tools). Field names of the JSON are stable
//! (docs/operations.md); the wording of findings and hints is not.

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::fmt::Write as _;

/// Version of the JSON document; bumped only when a field changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

/// The fields of a check in the JSON document, sorted (stable: docs/operations.md).
pub const CHECK_FIELDS: &[&str] = &[
    "details",
    "duration_ms",
    "finding",
    "hint",
    "id",
    "status",
    "title",
];

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works now, but something is off or pending.
    Warn,
    /// Broken: the node cannot (or will not) work like this.
    Fail,
    /// Not applicable here, or could not run (needs root, nothing to check yet).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✔",
            Status::Warn => "!",
            Status::Fail => "✖",
            Status::Skipped => "-",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Status::Ok => "\x1b[32m",
            Status::Warn => "\x1b[33m",
            Status::Fail => "\x1b[31m",
            Status::Skipped => "\x1b[2m",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `key-vault`.
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// What was found, in one line.
    pub finding: String,
    /// What to do about it (warn and fail only).
    pub hint: Option<String>,
    pub duration_ms: u64,
    /// Supporting lines: journal lines, per-step durations. Possibly empty.
    pub details: Vec<String>,
}

/// What the doctor learnt about the node itself, for the header line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub name: Option<String>,
    pub role: Option<String>,
    /// `file`, `imds_user_data` or `last_converged`, when a config was found.
    pub config_source: Option<String>,
    /// Whether the doctor ran as root (otherwise some checks are skipped).
    pub as_root: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The worst status among the checks that ran: `fail`, `warn` or `ok`.
    pub status: &'static str,
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub skipped: usize,
    pub duration_ms: u64,
    /// The process exit code this report leads to (0: no check failed, 1: a check failed).
    pub exit_code: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub format_version: u32,
    pub node: NodeInfo,
    pub checks: Vec<Check>,
    pub summary: Summary,
}

impl Report {
    pub fn new(node: NodeInfo, checks: Vec<Check>, duration_ms: u64) -> Report {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        let (ok, warn, fail, skipped) = (
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skipped),
        );
        let status = if fail > 0 {
            "fail"
        } else if warn > 0 {
            "warn"
        } else {
            "ok"
        };
        Report {
            format_version: FORMAT_VERSION,
            node,
            summary: Summary {
                status,
                ok,
                warn,
                fail,
                skipped,
                duration_ms,
                exit_code: i32::from(fail > 0),
            },
            checks,
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.summary.exit_code
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Replaces every occurrence of a known secret in every text of the report. The checks
    /// never put one there; this is the second line of defence (a journal line, an error
    /// body echoed by a server).
    pub fn redact(&mut self, secrets: &[SecretString]) {
        let secrets: Vec<&str> = secrets
            .iter()
            .map(|s| s.expose_secret())
            .filter(|s| s.len() >= 4)
            .collect();
        if secrets.is_empty() {
            return;
        }
        let scrub = |text: &mut String| {
            for s in &secrets {
                if text.contains(s) {
                    *text = text.replace(s, "[REDACTED]");
                }
            }
        };
        for c in &mut self.checks {
            scrub(&mut c.finding);
            if let Some(h) = &mut c.hint {
                scrub(h);
            }
            c.details.iter_mut().for_each(scrub);
        }
    }

    /// The report for a person: a header, one line per check (hint and details indented
    /// below it), a summary line. `colour` adds ANSI colours to the marks.
    pub fn render_human(&self, colour: bool) -> String {
        const ID_WIDTH: usize = 17;
        let paint = |status: Status, text: &str| {
            if colour {
                format!("{}{text}\x1b[0m", status.colour())
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        let node = &self.node;
        let _ = write!(out, "canarie-agent doctor");
        match (&node.name, &node.role) {
            (name, Some(role)) => {
                let _ = write!(
                    out,
                    ": node {} ({role})",
                    name.as_deref().unwrap_or("(hostname)")
                );
            }
            _ => out.push_str(": node config unknown"),
        }
        if let Some(source) = &node.config_source {
            let _ = write!(out, ", config from {}", source_label(source));
        }
        if !node.as_root {
            out.push_str(", not root: some checks skipped");
        }
        out.push('\n');
        let indent = " ".repeat(ID_WIDTH + 3);
        for c in &self.checks {
            let text = match c.status {
                Status::Skipped => format!("skipped: {}", c.finding),
                _ => c.finding.clone(),
            };
            let _ = writeln!(
                out,
                "{} {:<ID_WIDTH$} {text}",
                paint(c.status, c.status.mark()),
                c.id
            );
            if let Some(hint) = &c.hint {
                let arrow = if colour { "\x1b[1m→\x1b[0m" } else { "→" };
                let _ = writeln!(out, "{indent}{arrow} {hint}");
            }
            for line in &c.details {
                let _ = writeln!(out, "{indent}│ {line}");
            }
        }
        let s = &self.summary;
        let _ = write!(
            out,
            "doctor: {} ok, {} warning{}, {} failed, {} skipped in {:.1} s",
            s.ok,
            s.warn,
            if s.warn == 1 { "" } else { "s" },
            s.fail,
            s.skipped,
            s.duration_ms as f64 / 1000.0
        );
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect();
        if !failed.is_empty() {
            let _ = write!(out, "; failed: {}", failed.join(", "));
        }
        out.push('\n');
        out
    }
}

fn source_label(source: &str) -> &str {
    match source {
        "imds_user_data" => "IMDS userData",
        "file" => "--config file",
        "last_converged" => "the last converged copy",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &'static str, status: Status, hint: Option<&str>) -> Check {
        Check {
            id,
            title: "A check",
            status,
            finding: format!("{id} finding"),
            hint: hint.map(str::to_string),
            duration_ms: 3,
            details: Vec::new(),
        }
    }

    fn report() -> Report {
        Report::new(
            NodeInfo {
                name: Some("cp-01".into()),
                role: Some("server".into()),
                config_source: Some("imds_user_data".into()),
                as_root: true,
            },
            vec![
                check("imds", Status::Ok, None),
                check("key-vault", Status::Fail, Some("grant the role")),
                check("time-sync", Status::Warn, Some("enable NTP")),
                check("rke2-journal", Status::Skipped, None),
            ],
            1234,
        )
    }

    #[test]
    fn summary_counts_and_exit_code() {
        let r = report();
        assert_eq!(
            (
                r.summary.ok,
                r.summary.warn,
                r.summary.fail,
                r.summary.skipped
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(r.summary.status, "fail");
        assert_eq!(r.exit_code(), 1);
        let only_warn = Report::new(
            NodeInfo::default(),
            vec![check("a", Status::Warn, Some("h"))],
            0,
        );
        assert_eq!(only_warn.exit_code(), 0, "a warning alone does not fail");
        assert_eq!(only_warn.summary.status, "warn");
    }

    #[test]
    fn human_text_has_marks_hints_and_a_summary_and_no_colour_unless_asked() {
        let text = report().render_human(false);
        assert!(text
            .starts_with("canarie-agent doctor: node cp-01 (server), config from IMDS userData\n"));
        assert!(
            text.contains("✔ imds              imds finding\n"),
            "{text}"
        );
        assert!(text.contains("✖ key-vault         key-vault finding\n"));
        assert!(text.contains("→ grant the role\n"));
        assert!(text.contains("- rke2-journal      skipped: rke2-journal finding\n"));
        assert!(text.ends_with(
            "doctor: 1 ok, 1 warning, 1 failed, 1 skipped in 1.2 s; failed: key-vault\n"
        ));
        assert!(!text.contains('\x1b'));
        assert!(report().render_human(true).contains("\x1b[31m✖\x1b[0m"));
    }

    #[test]
    fn json_field_names_are_the_documented_ones() {
        let v = serde_json::to_value(report()).unwrap();
        let mut top: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        top.sort();
        assert_eq!(top, ["checks", "format_version", "node", "summary"]);
        let mut fields: Vec<_> = v["checks"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        fields.sort();
        assert_eq!(fields, CHECK_FIELDS);
        assert_eq!(v["checks"][1]["status"], "fail");
        assert_eq!(v["checks"][0]["hint"], serde_json::Value::Null);
        assert_eq!(v["summary"]["exit_code"], 1);
        assert_eq!(v["node"]["config_source"], "imds_user_data");
    }

    #[test]
    fn redact_scrubs_every_text() {
        let mut r = report();
        r.checks[0].finding = "line with K10secret inside".into();
        r.checks[1].hint = Some("K10secret".into());
        r.checks[2].details = vec!["x K10secret y".into()];
        r.redact(&[SecretString::from("K10secret")]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("K10secret"), "{json}");
        assert_eq!(r.checks[0].finding, "line with [REDACTED] inside");
    }
}
