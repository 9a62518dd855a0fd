//! Shared mutable state of a running simulator: secrets, user data, issued tokens, rules,
//! the throttle and the request log.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::rules::{validate_rules, Rule, RuleSet, Service};
use crate::scenario::{RateLimit, Scenario};

/// One served request, as written to the request log. Holds names and flags only: never a
/// token, a secret value, or user data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// "imds" or "vault".
    pub service: String,
    pub method: String,
    pub path: String,
    /// Raw query string without the `?` ("" if none).
    pub query: String,
    /// Status sent; 0 when a `hang` rule caught the request (never answered).
    pub status: u16,
    /// Milliseconds since the simulator started, when the request arrived.
    pub elapsed_ms: u64,
    /// Label of the rule that shaped the answer, if any.
    pub rule: Option<String>,
    /// Error code in the answer (IMDS `error`; Key Vault `innererror.code` or `code`).
    pub error: Option<String>,
    pub has_metadata_header: bool,
    pub has_authorization: bool,
    pub has_forwarded_for: bool,
    pub user_agent: Option<String>,
    /// WireServer: the `x-ms-agent-name` (XML protocol) or `x-ms-guest-agent-name` (JSON
    /// protocol) header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// WireServer: the health report this request carried, when it parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRecord>,
}

/// A health report as the simulator understood it (State, SubStatus, Description are what
/// the platform shows as the VM's provisioning state and message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// "xml" (`POST /machine?comp=health`) or "json" (`POST /provisioning/health`).
    pub protocol: String,
    /// `Ready` or `NotReady`.
    pub state: String,
    pub sub_status: Option<String>,
    pub description: Option<String>,
    /// XML only: the `GoalStateIncarnation` the client reported against.
    pub incarnation: Option<String>,
}

pub(crate) struct SecretVersion {
    pub version: String,
    pub value: String,
    pub created: u64,
}

pub(crate) struct SecretEntry {
    pub enabled: bool,
    /// Oldest first; the last one is the current version.
    pub versions: Vec<SecretVersion>,
}

pub(crate) struct IssuedToken {
    pub resource: String,
}

/// Fixed-window counter: cheap (one uncontended lock per request) and good enough to
/// reproduce "about N requests per window, then 429".
struct Throttle {
    limit: u64,
    window: Duration,
    /// (window index since start, requests counted in it)
    counter: Mutex<(u64, u64)>,
}

pub(crate) struct State {
    pub start: Instant,
    pub scenario: Scenario,
    pub user_data: RwLock<Option<String>>,
    pub secrets: RwLock<BTreeMap<String, SecretEntry>>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    rules: RwLock<Arc<RuleSet>>,
    throttle: Option<Throttle>,
    /// The WireServer goal state's current incarnation.
    pub incarnation: AtomicU64,
    log: RequestLog,
}

struct RequestLog {
    seq: AtomicU64,
    records: Mutex<Vec<RequestRecord>>,
    file: Option<Mutex<File>>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 32 lowercase hex digits, the shape of a Key Vault secret version.
pub(crate) fn random_hex32() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl State {
    pub fn new(
        scenario: Scenario,
        request_log: Option<&Path>,
        start: Instant,
    ) -> anyhow::Result<State> {
        scenario.validate()?;
        let user_data = scenario.initial_user_data()?;
        let now = unix_now();
        let secrets = scenario
            .secrets
            .iter()
            .map(|(name, spec)| {
                let entry = SecretEntry {
                    enabled: spec.enabled,
                    versions: vec![SecretVersion {
                        version: random_hex32(),
                        value: spec.value.clone(),
                        created: now,
                    }],
                };
                (name.clone(), entry)
            })
            .collect();
        let file = match request_log {
            Some(path) => Some(Mutex::new(File::create(path).with_context(|| {
                format!("cannot create request log {}", path.display())
            })?)),
            None => None,
        };
        let throttle =
            scenario
                .vault_rate_limit
                .as_ref()
                .map(|RateLimit { requests, window_s }| Throttle {
                    limit: *requests,
                    window: Duration::from_secs_f64(*window_s),
                    counter: Mutex::new((0, 0)),
                });
        let rules = Arc::new(RuleSet::new(scenario.rules.clone(), start));
        Ok(State {
            start,
            user_data: RwLock::new(user_data),
            secrets: RwLock::new(secrets),
            tokens: Mutex::new(HashMap::new()),
            rules: RwLock::new(rules),
            throttle,
            incarnation: AtomicU64::new(scenario.wireserver.incarnation),
            log: RequestLog {
                seq: AtomicU64::new(0),
                records: Mutex::new(Vec::new()),
                file,
            },
            scenario,
        })
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the rules; their clock (`from_s`/`until_s`) and `times` counts restart now.
    pub fn try_set_rules(&self, rules: Vec<Rule>) -> anyhow::Result<()> {
        validate_rules(&rules)?;
        let set = Arc::new(RuleSet::new(rules, Instant::now()));
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }

    pub fn set_secret(&self, name: &str, value: &str) -> String {
        let version = random_hex32();
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        let entry = secrets
            .entry(name.to_string())
            .or_insert_with(|| SecretEntry {
                enabled: true,
                versions: Vec::new(),
            });
        entry.versions.push(SecretVersion {
            version: version.clone(),
            value: value.to_string(),
            created: unix_now(),
        });
        version
    }

    pub fn remove_secret(&self, name: &str) -> bool {
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        secrets.remove(name).is_some()
    }

    pub fn set_secret_enabled(&self, name: &str, enabled: bool) -> bool {
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        match secrets.get_mut(name) {
            Some(entry) => {
                entry.enabled = enabled;
                true
            }
            None => false,
        }
    }

    pub fn set_user_data(&self, value: Option<String>) {
        *self.user_data.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    pub fn user_data(&self) -> Option<String> {
        self.user_data
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn remember_token(&self, token: String, resource: String) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(token, IssuedToken { resource });
    }

    /// The resource a token was issued for, or None if the simulator never issued it.
    pub fn token_resource(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).map(|t| t.resource.clone())
    }

    /// Counts one vault request; false when it is over the configured rate.
    pub fn vault_admit(&self) -> bool {
        let Some(throttle) = &self.throttle else {
            return true;
        };
        let window = (self.start.elapsed().as_nanos() / throttle.window.as_nanos().max(1)) as u64;
        let mut counter = throttle.counter.lock().unwrap_or_else(|e| e.into_inner());
        if counter.0 != window {
            *counter = (window, 0);
        }
        counter.1 += 1;
        counter.1 <= throttle.limit
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::SeqCst)
    }

    /// Moves the goal state to a new incarnation (what Azure does when the VM's model
    /// changes); returns the new one.
    pub fn next_incarnation(&self) -> u64 {
        self.incarnation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn next_seq(&self) -> u64 {
        self.log.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Appends to the in-memory list and the log file (one flushed JSON line per request).
    pub fn record(&self, record: RequestRecord) {
        tracing::info!(
            service = %record.service,
            method = %record.method,
            path = %record.path,
            status = record.status,
            rule = record.rule.as_deref().unwrap_or("-"),
            "request"
        );
        if let Some(file) = &self.log.file {
            match serde_json::to_string(&record) {
                Ok(mut line) => {
                    line.push('\n');
                    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                        tracing::warn!("cannot write to the request log: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot serialise a request record: {e}"),
            }
        }
        let mut records = self.log.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push(record);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Service {
    pub(crate) fn record_name(self) -> String {
        self.as_str().to_string()
    }
}
