//! The example node configs in examples/, for tests that start from them (the config unit
//! tests and these share one copy).

use serde_json::{json, Value};

/// examples/server-with-secrets.json (DNS zone, Fleet credentials, every cluster secret),
/// with the short RBAC wait of the sandbox's own configs.
pub fn server_with_secrets() -> Value {
    let mut c: Value =
        serde_json::from_str(include_str!("../../../examples/server-with-secrets.json"))
            .expect("examples/server-with-secrets.json is JSON");
    c["join_token"]["rbac_wait_seconds"] = json!(5);
    c
}
