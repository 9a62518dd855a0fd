//! Scripted faults: which requests a rule catches (endpoint, time window, count) and how it
//! answers (a preset, an explicit status/body, or the real answer delayed, trickled or hung).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::reply::{self, Reply};

/// Trickle interval used by the `trickle` preset when the rule sets no `trickle_ms`.
const DEFAULT_TRICKLE_MS: u64 = 200;

/// One scripted fault. All fields are optional; a rule with nothing but `endpoint` passes the
/// real answer through (useful with `delay_ms`, `trickle_ms` or extra `headers`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Label in the request log; defaults to the preset name, else `rule#<index>`.
    pub name: Option<String>,
    /// A named fault from azure-protocol.md; explicit fields below override its parts.
    pub preset: Option<Preset>,
    /// Which requests to catch; defaults to the preset's endpoint, else `any`.
    pub endpoint: Option<Endpoint>,
    /// Only catch requests for this Key Vault secret name.
    pub secret: Option<String>,
    /// Catch only from this many seconds after start (or after the last `set_rules`).
    pub from_s: Option<f64>,
    /// Catch only until this many seconds after start (exclusive).
    pub until_s: Option<f64>,
    /// Catch only the first N requests that match endpoint and window.
    pub times: Option<u64>,
    pub status: Option<u16>,
    /// A JSON string is sent verbatim as text/plain; any other JSON value as JSON.
    pub body: Option<serde_json::Value>,
    /// Headers to add to (or replace in) the response.
    pub headers: BTreeMap<String, String>,
    /// Wait this long before answering.
    pub delay_ms: Option<u64>,
    /// Accept the request and never answer.
    pub hang: bool,
    /// Send the body one byte per this many milliseconds.
    pub trickle_ms: Option<u64>,
    /// Close the connection without an answer (what a client sees of a host that is not
    /// reachable yet: the request fails before any status arrives).
    pub close: bool,
}

/// Named faults, one per item in azure-protocol.md's list (6, 7 and the plain 401 challenge
/// are always-on real behaviour, not presets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    #[serde(rename = "imds_410")]
    Imds410,
    #[serde(rename = "imds_429")]
    Imds429,
    #[serde(rename = "imds_429_retry_after")]
    Imds429RetryAfter,
    #[serde(rename = "token_500")]
    Token500,
    #[serde(rename = "imds_404_updating")]
    Imds404Updating,
    #[serde(rename = "identity_not_found")]
    IdentityNotFound,
    #[serde(rename = "kv_401_invalid_issuer")]
    Kv401InvalidIssuer,
    #[serde(rename = "kv_403_rbac")]
    Kv403Rbac,
    #[serde(rename = "kv_403_disabled")]
    Kv403Disabled,
    #[serde(rename = "kv_403_access_denied")]
    Kv403AccessDenied,
    #[serde(rename = "kv_404")]
    Kv404,
    #[serde(rename = "kv_429")]
    Kv429,
    #[serde(rename = "hang")]
    Hang,
    #[serde(rename = "trickle")]
    Trickle,
    /// WireServer: serve the goal state, then move to a new incarnation, so a health report
    /// built from what was just read is stale (answered 410 until the client reads again).
    #[serde(rename = "wire_new_incarnation")]
    WireNewIncarnation,
}

/// Which requests a rule catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/metadata/identity/oauth2/token`
    Token,
    /// `/metadata/instance` and its sub-paths, except userData
    Instance,
    /// `/metadata/instance/compute/userData`
    UserData,
    /// any IMDS request
    Imds,
    /// `/secrets/...`
    Secret,
    /// any Key Vault request that carries an Authorization header
    Vault,
    /// WireServer `GET /?comp=versions`
    Versions,
    /// WireServer `GET /machine/?comp=goalstate`
    GoalState,
    /// WireServer health reports: `POST /machine?comp=health` and `POST /provisioning/health`
    Health,
    /// any WireServer request
    #[serde(rename = "wireserver")]
    WireServer,
    /// everything
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Imds,
    Vault,
    WireServer,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Imds => "imds",
            Service::Vault => "vault",
            Service::WireServer => "wireserver",
        }
    }
}

impl Endpoint {
    fn service(self) -> Option<Service> {
        match self {
            Endpoint::Token | Endpoint::Instance | Endpoint::UserData | Endpoint::Imds => {
                Some(Service::Imds)
            }
            Endpoint::Secret | Endpoint::Vault => Some(Service::Vault),
            Endpoint::Versions | Endpoint::GoalState | Endpoint::Health | Endpoint::WireServer => {
                Some(Service::WireServer)
            }
            Endpoint::Any => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Instance => "instance",
            Endpoint::UserData => "user_data",
            Endpoint::Imds => "imds",
            Endpoint::Secret => "secret",
            Endpoint::Vault => "vault",
            Endpoint::Versions => "versions",
            Endpoint::GoalState => "goal_state",
            Endpoint::Health => "health",
            Endpoint::WireServer => "wireserver",
            Endpoint::Any => "any",
        }
    }
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Imds410 => "imds_410",
            Preset::Imds429 => "imds_429",
            Preset::Imds429RetryAfter => "imds_429_retry_after",
            Preset::Token500 => "token_500",
            Preset::Imds404Updating => "imds_404_updating",
            Preset::IdentityNotFound => "identity_not_found",
            Preset::Kv401InvalidIssuer => "kv_401_invalid_issuer",
            Preset::Kv403Rbac => "kv_403_rbac",
            Preset::Kv403Disabled => "kv_403_disabled",
            Preset::Kv403AccessDenied => "kv_403_access_denied",
            Preset::Kv404 => "kv_404",
            Preset::Kv429 => "kv_429",
            Preset::Hang => "hang",
            Preset::Trickle => "trickle",
            Preset::WireNewIncarnation => "wire_new_incarnation",
        }
    }

    fn default_endpoint(self) -> Endpoint {
        match self {
            Preset::Imds410 | Preset::Imds429 | Preset::Imds429RetryAfter => Endpoint::Imds,
            Preset::Imds404Updating => Endpoint::Imds,
            Preset::Token500 | Preset::IdentityNotFound => Endpoint::Token,
            Preset::Kv401InvalidIssuer | Preset::Kv429 => Endpoint::Vault,
            Preset::Kv403Rbac | Preset::Kv403Disabled | Preset::Kv403AccessDenied => {
                Endpoint::Secret
            }
            Preset::Kv404 => Endpoint::Secret,
            Preset::Hang | Preset::Trickle => Endpoint::Any,
            Preset::WireNewIncarnation => Endpoint::GoalState,
        }
    }

    /// The canned answer, or None for presets that only change how the real answer travels.
    fn reply(self, ctx: &MatchCtx<'_>) -> Option<Reply> {
        Some(match self {
            Preset::Imds410 => reply::imds_error(410, "Gone"),
            Preset::Imds429 => reply::imds_error(429, "Too many requests"),
            Preset::Imds429RetryAfter => {
                reply::imds_error(429, "Too many requests").with_header("Retry-After", "1")
            }
            Preset::Token500 => reply::imds_token_500(),
            Preset::Imds404Updating => reply::imds_error(404, "Not found"),
            Preset::IdentityNotFound => reply::imds_identity_not_found(),
            Preset::Kv401InvalidIssuer => reply::kv_invalid_issuer(ctx.tenant),
            Preset::Kv403Rbac => reply::kv_forbidden_by_rbac(),
            Preset::Kv403Disabled => reply::kv_secret_disabled(),
            Preset::Kv403AccessDenied => reply::kv_access_denied(),
            Preset::Kv404 => reply::kv_secret_not_found(ctx.secret_id.unwrap_or("unknown")),
            Preset::Kv429 => reply::kv_throttled(),
            Preset::Hang | Preset::Trickle | Preset::WireNewIncarnation => return None,
        })
    }
}

/// Rejects rules that could never do what their author meant.
pub(crate) fn validate_rules(rules: &[Rule]) -> anyhow::Result<()> {
    for (index, rule) in rules.iter().enumerate() {
        let label = rule_label(rule, index);
        validate_rule(rule).map_err(|e| anyhow::anyhow!("rule {index} ({label}): {e}"))?;
    }
    Ok(())
}

fn validate_rule(rule: &Rule) -> anyhow::Result<()> {
    if let Some(status) = rule.status {
        if !(100..=599).contains(&status) {
            bail!("`status` {status} is not an HTTP status (100-599)");
        }
    }
    for (key, value) in [("from_s", rule.from_s), ("until_s", rule.until_s)] {
        if let Some(v) = value {
            if !(v.is_finite() && v >= 0.0) {
                bail!("`{key}` must be a non-negative number of seconds");
            }
        }
    }
    if let (Some(from), Some(until)) = (rule.from_s, rule.until_s) {
        if from >= until {
            bail!("`from_s` ({from}) must be less than `until_s` ({until})");
        }
    }
    for (name, value) in &rule.headers {
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            bail!("header name {name:?} is not a valid HTTP header name");
        }
        if hyper::header::HeaderValue::from_str(value).is_err() {
            bail!("header {name} has a value that is not valid in HTTP");
        }
    }
    if rule.times == Some(0) {
        bail!("`times` must be at least 1 (leave it out to catch every matching request)");
    }
    if rule.trickle_ms == Some(0) {
        bail!("`trickle_ms` must be at least 1");
    }
    let hangs = rule.hang || rule.preset == Some(Preset::Hang);
    if hangs && (rule.trickle_ms.is_some() || rule.preset == Some(Preset::Trickle)) {
        bail!("`hang` never answers, so `trickle_ms` cannot apply");
    }
    let endpoint = effective_endpoint(rule);
    if let (Some(preset), Some(service)) = (rule.preset, endpoint.service()) {
        if let Some(preset_service) = preset.default_endpoint().service() {
            if preset_service != service {
                bail!(
                    "preset `{}` answers {} requests, but `endpoint` is `{}`",
                    preset.name(),
                    preset_service.as_str(),
                    endpoint.name()
                );
            }
        }
    }
    if (rule.hang || rule.preset == Some(Preset::Hang)) && rule.close {
        bail!("`hang` and `close` contradict each other: pick one");
    }
    if rule.secret.is_some() && endpoint.service().is_some_and(|s| s != Service::Vault) {
        bail!(
            "`secret` only matches Key Vault requests, but `endpoint` is `{}`",
            endpoint.name()
        );
    }
    Ok(())
}

fn effective_endpoint(rule: &Rule) -> Endpoint {
    rule.endpoint
        .or(rule.preset.map(Preset::default_endpoint))
        .unwrap_or(Endpoint::Any)
}

fn rule_label(rule: &Rule, index: usize) -> String {
    rule.name
        .clone()
        .or_else(|| rule.preset.map(|p| p.name().to_string()))
        .unwrap_or_else(|| format!("rule#{index}"))
}

/// What a request looks like to the rule matcher.
pub(crate) struct MatchCtx<'a> {
    pub service: Service,
    /// The most specific endpoint (`token`, `instance`, `user_data`, `secret`), if any.
    pub endpoint: Option<Endpoint>,
    /// Secret name for `/secrets/...` requests.
    pub secret_name: Option<&'a str>,
    /// Secret name or name/version, as Key Vault names it in a 404.
    pub secret_id: Option<&'a str>,
    pub tenant: &'a str,
}

impl Endpoint {
    fn matches(self, ctx: &MatchCtx<'_>) -> bool {
        match self {
            Endpoint::Any => true,
            Endpoint::Imds => ctx.service == Service::Imds,
            Endpoint::Vault => ctx.service == Service::Vault,
            Endpoint::WireServer => ctx.service == Service::WireServer,
            specific => ctx.endpoint == Some(specific),
        }
    }
}

struct ActiveRule {
    rule: Rule,
    label: String,
    endpoint: Endpoint,
    hits: AtomicU64,
}

/// The rules in force and the instant their clock started.
pub(crate) struct RuleSet {
    epoch: Instant,
    rules: Vec<ActiveRule>,
}

/// How to deliver a reply that a rule shaped.
pub(crate) struct Plan {
    /// None: hang (accept, never answer).
    pub reply: Option<Reply>,
    pub delay: Option<Duration>,
    pub trickle: Option<Duration>,
    pub rule: Option<String>,
    /// Close the connection instead of answering.
    pub close: bool,
    /// WireServer: move to a new goal state incarnation once this answer is decided.
    pub new_incarnation: bool,
}

impl Plan {
    pub fn plain(reply: Reply) -> Plan {
        Plan {
            reply: Some(reply),
            delay: None,
            trickle: None,
            rule: None,
            close: false,
            new_incarnation: false,
        }
    }
}

impl RuleSet {
    /// Rules must already be validated.
    pub fn new(rules: Vec<Rule>, epoch: Instant) -> RuleSet {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| ActiveRule {
                label: rule_label(&rule, index),
                endpoint: effective_endpoint(&rule),
                rule,
                hits: AtomicU64::new(0),
            })
            .collect();
        RuleSet { epoch, rules }
    }

    /// The first rule that catches this request, counting it against the rule's `times`.
    fn pick(&self, ctx: &MatchCtx<'_>) -> Option<&ActiveRule> {
        let now_s = self.epoch.elapsed().as_secs_f64();
        self.rules.iter().find(|active| {
            let rule = &active.rule;
            if !active.endpoint.matches(ctx) {
                return false;
            }
            if let Some(secret) = &rule.secret {
                if ctx.secret_name != Some(secret.as_str()) {
                    return false;
                }
            }
            if rule.from_s.is_some_and(|from| now_s < from) {
                return false;
            }
            if rule.until_s.is_some_and(|until| now_s >= until) {
                return false;
            }
            match rule.times {
                // Counted only once the endpoint and window matched, so `times` means
                // "the first N requests this rule could have answered".
                Some(limit) => active.hits.fetch_add(1, Ordering::Relaxed) < limit,
                None => true,
            }
        })
    }

    /// Applies the first matching rule, calling `real` when the rule passes the real
    /// answer through; without a matching rule the real answer goes out unchanged.
    pub fn plan(&self, ctx: &MatchCtx<'_>, real: impl FnOnce() -> Reply) -> Plan {
        let Some(active) = self.pick(ctx) else {
            return Plan::plain(real());
        };
        let rule = &active.rule;
        let label = Some(active.label.clone());
        if rule.hang || rule.preset == Some(Preset::Hang) {
            return Plan {
                reply: None,
                delay: None,
                trickle: None,
                rule: label,
                close: false,
                new_incarnation: false,
            };
        }
        let canned = rule.preset.and_then(|p| p.reply(ctx));
        let mut reply = match (canned, rule.status) {
            (Some(canned), _) => canned,
            (None, Some(status)) => Reply {
                status,
                headers: Vec::new(),
                body: bytes::Bytes::new(),
            },
            (None, None) => real(),
        };
        if let Some(status) = rule.status {
            reply.status = status;
        }
        if let Some(body) = &rule.body {
            reply.set_body(body);
        }
        for (name, value) in &rule.headers {
            reply.set_header(name, value);
        }
        let trickle_ms = rule
            .trickle_ms
            .or_else(|| (rule.preset == Some(Preset::Trickle)).then_some(DEFAULT_TRICKLE_MS));
        Plan {
            reply: Some(reply),
            delay: rule.delay_ms.map(Duration::from_millis),
            trickle: trickle_ms.map(Duration::from_millis),
            rule: label,
            close: rule.close,
            new_incarnation: rule.preset == Some(Preset::WireNewIncarnation),
        }
    }
}
