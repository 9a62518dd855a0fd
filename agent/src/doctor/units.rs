//! systemd's view: the RKE2 unit's state over D-Bus and RKE2's recent errors from the
//! journal.

use super::{Options, Outcome};
use crate::config::NodeConfig;
use crate::subprocess::Program;
use crate::systemd::Systemd;

/// How many recent error lines of RKE2 the journal check shows.
const JOURNAL_LINES: usize = 10;
/// How far back in this boot's RKE2 log the journal check looks.
const JOURNAL_SCAN: usize = 400;
/// Journal lines are cut to this many characters (the journal has them whole).
const JOURNAL_LINE_MAX: usize = 240;

/// `rke2-unit`: the role's RKE2 unit as systemd sees it.
pub(super) async fn rke2_unit(opts: &Options, config: &NodeConfig) -> (Outcome, ()) {
    let unit = config.role.rke2_unit();
    let systemd = match Systemd::connect(opts.cx.dbus_address.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            return (
                Outcome::fail(
                    format!("cannot ask systemd: {e:#}"),
                    "is this a systemd host? `systemctl status` should answer",
                ),
                (),
            )
        }
    };
    let state = match systemd.unit_state(unit).await {
        Ok(s) => s,
        Err(e) => {
            return (
                Outcome::fail(format!("{e:#}"), format!("`systemctl status {unit}`")),
                (),
            )
        }
    };
    let journal = format!("`journalctl -u {unit} -b`");
    let outcome = match (state.load_state.as_str(), state.active_state.as_str()) {
        ("not-found", _) => Outcome::fail(
            format!("{unit} is not installed"),
            "the VM image must contain RKE2 (installed with INSTALL_RKE2_METHOD / the rke2 install script); the agent only starts it",
        ),
        // A run stopped between writing a drop-in and reloading: RKE2 runs, but not as
        // its files now say it should.
        (_, "active") if state.need_daemon_reload => Outcome::warn(
            format!("{unit} is {state}, but systemd has not read its changed unit files"),
            "`systemctl restart canarie-agent` reloads systemd (and restarts RKE2 if a file it reads changed)",
        ),
        (_, "active") => Outcome::ok(format!("{unit} is {state}")),
        (_, "activating" | "reloading") => Outcome::warn(
            format!("{unit} is {state}"),
            format!("a server's first start takes minutes; follow it with {journal} -f"),
        ),
        (_, "failed") => Outcome::fail(
            format!("{unit} is {state}"),
            format!("its errors are in check rke2-journal and {journal}; after fixing the cause, `systemctl restart canarie-agent` starts it again"),
        ),
        _ => Outcome::fail(
            format!("{unit} is {state}: canarie-agent has not started it"),
            "canarie-agent starts RKE2 at the end of bootstrap: see check last-run and `journalctl -u canarie-agent -b`",
        ),
    };
    (outcome, ())
}

/// `rke2-journal`: RKE2's errors (and systemd's warnings about the unit) from this boot.
/// Read as JSON to keep the priority: RKE2 logs everything at priority info, with its own
/// `level=error` / `level=fatal` in the message.
pub(super) async fn rke2_journal(opts: &Options, config: &NodeConfig) -> (Outcome, ()) {
    let unit = config.role.rke2_unit();
    if !opts.cx.root.is_host() {
        return (
            Outcome::skipped("the host's journal is not read for a --root sandbox"),
            (),
        );
    }
    if !opts.as_root {
        return (
            Outcome::needs_root(
                "the system journal; members of systemd-journal can run `journalctl -u` themselves",
            ),
            (),
        );
    }
    let scan = JOURNAL_SCAN.to_string();
    let output = Program::new("journalctl")
        .args(["-u", unit, "-b", "-n", &scan, "--no-pager", "-o", "json"])
        .output_async()
        .await;
    let output = match output {
        Ok(o) => o,
        Err(e) => return (Outcome::skipped(format!("journalctl cannot run: {e}")), ()),
    };
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return (
            Outcome::skipped(format!(
                "journalctl failed: {}",
                err.lines().next().unwrap_or("no message")
            )),
            (),
        );
    }
    let lines = problem_lines(&String::from_utf8_lossy(&output.stdout));
    if lines.is_empty() {
        return (
            Outcome::ok(format!("no errors from {unit} in this boot's journal")),
            (),
        );
    }
    (
        Outcome::warn(
            format!(
                "{} error line{} from {unit} in this boot (the last {} below)",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" },
                lines.len().min(JOURNAL_LINES)
            ),
            format!("the whole story: `journalctl -u {unit} -b`"),
        )
        .with_details(lines[lines.len().saturating_sub(JOURNAL_LINES)..].to_vec()),
        (),
    )
}

/// The lines worth showing from `journalctl -o json` output: priority warning or worse
/// (systemd's own lines about the unit), or RKE2's error and fatal lines.
fn problem_lines(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let message = v["MESSAGE"].as_str()?.trim().to_string();
            let priority: u8 = v["PRIORITY"].as_str()?.parse().ok()?;
            let rke2_error = message.contains("level=error") || message.contains("level=fatal");
            (priority <= 4 || rke2_error).then(|| cut(&message))
        })
        .collect()
}

fn cut(line: &str) -> String {
    if line.chars().count() <= JOURNAL_LINE_MAX {
        return line.to_string();
    }
    let mut s: String = line.chars().take(JOURNAL_LINE_MAX).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_keeps_warnings_and_rke2_errors_only() {
        let json = [
            r#"{"MESSAGE":"time=\"x\" level=info msg=\"Starting rke2\"","PRIORITY":"6"}"#,
            r#"{"MESSAGE":"time=\"x\" level=error msg=\"failed to get CA certs\"","PRIORITY":"6"}"#,
            r#"{"MESSAGE":"rke2-agent.service: Main process exited, code=exited, status=1/FAILURE","PRIORITY":"4"}"#,
            r#"{"MESSAGE":[104,105],"PRIORITY":"3"}"#,
            "not json",
            r#"{"MESSAGE":"time=\"x\" level=fatal msg=\"token mismatch\"","PRIORITY":"6"}"#,
        ]
        .join("\n");
        let lines = problem_lines(&json);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("failed to get CA certs"));
        assert!(lines[1].contains("status=1/FAILURE"));
        assert!(lines[2].contains("token mismatch"));
        let long = "x".repeat(1000);
        assert_eq!(cut(&long).chars().count(), JOURNAL_LINE_MAX + 1);
    }
}
