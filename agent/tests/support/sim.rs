//! azure-sim in-process on 127.0.0.1, and agent clients pointed at it.

use azure_sim::{Rule, Scenario, Sim, SimOptions};
use canarie_agent::azure::{ImdsClient, KeyVaultClient, RetryPolicy};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The join token every scenario holds; tests assert it never leaks.
pub const JOIN_TOKEN: &str = "K10-canary-join-token-7f3a9c1e5b";
pub const VAULT: &str = "kv-canarie";
pub const SECRET: &str = "rke2-join-token";

/// Short deadlines so fault tests finish in seconds; the shape is the production policy's.
pub const FAST: RetryPolicy = RetryPolicy {
    deadline: Duration::from_secs(15),
    attempt_timeout: Duration::from_secs(2),
    min_delay: Duration::from_millis(50),
    max_delay: Duration::from_millis(400),
};

pub struct TestSim {
    pub sim: Sim,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A scenario with the join token secret, plus `extra` fields merged in (rules, user_data_json…).
pub fn scenario(extra: Value) -> Scenario {
    let mut base = serde_json::json!({
        "secrets": { SECRET: { "value": JOIN_TOKEN } }
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(base).expect("test scenario is valid")
}

pub fn rules(v: Value) -> Vec<Rule> {
    serde_json::from_value(v).expect("test rules are valid")
}

impl TestSim {
    pub async fn start(scenario: Scenario) -> TestSim {
        let sim = Sim::start(SimOptions {
            scenario,
            ..SimOptions::default()
        })
        .await
        .expect("azure-sim starts on loopback");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        sim.write_ca(&ca_file).unwrap();
        TestSim {
            sim,
            ca_file,
            _dir: dir,
        }
    }

    pub fn imds(&self) -> ImdsClient {
        ImdsClient::new(&self.sim.imds_url(), FAST).unwrap()
    }

    pub fn vault(&self) -> KeyVaultClient {
        KeyVaultClient::new(Some(&self.sim.vault_url()), Some(&self.ca_file), FAST).unwrap()
    }

    /// Statuses the simulator answered, in order, for requests whose path contains `path_part`.
    pub fn statuses(&self, path_part: &str) -> Vec<u16> {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.path.contains(path_part))
            .map(|r| r.status)
            .collect()
    }
}
