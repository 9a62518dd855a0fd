//! Steps, plan/apply, node state and the report.
