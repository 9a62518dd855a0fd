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
            if mode == Mode::Apply {
                write_metrics(&cx, false, exit::ERROR, Vec::new());
            }
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
    if mode == Mode::Apply {
        let steps = report
            .steps
            .iter()
            .map(|s| (s.step.name(), s.duration_ms as f64 / 1000.0))
            .collect();
        write_metrics(&cx, report.converged, report.exit_code(), steps);
    }
    report.exit_code()
}

/// After every `bootstrap`: the run for node-exporter (a failure to write is logged, never
/// the run's result).
fn write_metrics(
    cx: &reconcile::Context,
    success: bool,
    exit_code: i32,
    steps: Vec<(&'static str, f64)>,
) {
    let timestamp_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let metrics = crate::metrics::RunMetrics {
        timestamp_seconds,
        success,
        exit_code,
        steps,
    };
    if let Err(e) = crate::metrics::write(&cx.root, &metrics) {
        tracing::warn!(error = %format!("{e:#}"), "could not write the metrics file");
    }
}
