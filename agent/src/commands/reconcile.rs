//! `canarie-agent plan [--json]` and `canarie-agent bootstrap`: one reconciler run, read-only
//! or applying.

use crate::cli::{exit, GlobalArgs};
use crate::reconcile::{self, Mode};

pub fn run(global: &GlobalArgs, mode: Mode, json: bool) -> i32 {
    let runtime = match super::runtime(if mode == Mode::Plan {
        "plan"
    } else {
        "bootstrap"
    }) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let cx = super::context(global);
    let report = match runtime.block_on(reconcile::run(&cx, mode)) {
        Ok(report) => report,
        Err(e) => {
            super::report_error(
                if mode == Mode::Plan {
                    "plan"
                } else {
                    "bootstrap"
                },
                &e,
            );
            return exit::ERROR;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        print!("{}", report.render_human());
    }
    if let Some(line) = report.failure_line() {
        eprintln!("canarie-agent: {line}");
    }
    report.exit_code()
}
