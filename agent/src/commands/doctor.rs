//! `canarie-agent doctor [--json]`: runs the checks and prints them. Exit 0 when no check
//! failed (warnings allowed), 1 when one did, 2 when doctor itself could not run.

use crate::cli::{exit, GlobalArgs};
use crate::doctor::{self, Options};
use std::io::{IsTerminal, Write};
use tracing::instrument::WithSubscriber;

pub fn run(global: &GlobalArgs, json: bool) -> i32 {
    let opts = match Options::new(super::context(global)) {
        Ok(o) => o,
        Err(e) => {
            super::report_error("doctor cannot run", &e);
            return exit::ERROR;
        }
    };
    let runtime = match super::runtime("doctor") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let checks = doctor::run(&opts);
    // The checks' findings say everything; the clients' retry logs would only repeat them
    // on stderr. CANARIE_LOG brings the log back (debugging doctor itself).
    let report = if std::env::var_os("CANARIE_LOG").is_some() {
        runtime.block_on(checks)
    } else {
        runtime.block_on(checks.with_subscriber(tracing::subscriber::NoSubscriber::default()))
    };
    // A check cut by its deadline may leave a blocking probe behind: do not wait for it.
    runtime.shutdown_background();
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(t) => t + "\n",
            Err(e) => {
                eprintln!("canarie-agent: doctor cannot serialize its report: {e}");
                return exit::ERROR;
            }
        }
    } else {
        report.render_human(use_colour())
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        eprintln!("canarie-agent: doctor cannot write its report: {e}");
        return exit::ERROR;
    }
    report.exit_code()
}

/// Colour only for a person at a terminal, and never when NO_COLOR is set (no-color.org)
/// or the terminal is dumb.
fn use_colour() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}
