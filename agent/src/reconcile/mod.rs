//! The reconciler: each concern is a step that observes, decides, applies and reports.
//! `plan` runs observe+decide; `bootstrap` applies too. Knows steps, not HTTP.

pub mod change;
pub mod inputs;

pub use change::{Action, Change};
