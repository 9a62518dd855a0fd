//! Azure's WireServer (168.63.129.16): telling the platform the VM is provisioned, in the
//! goal state + `comp=health` XML protocol WALinuxAgent speaks (docs/operations.md,
//! "Reports to Azure", says why this one and not azure-init's JSON report). Read the goal
//! state, report against its incarnation, read it again when the incarnation moved on.

use super::http::{self, read_capped, transport_error};
use super::retry::{retry, AttemptError, RetryPolicy};
use anyhow::{Context, Result};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Where the WireServer answers on every Azure VM.
pub const WIRESERVER_DEFAULT_URL: &str = "http://168.63.129.16";
/// The wire protocol version both WALinuxAgent and canarie-agent speak.
pub const PROTOCOL_VERSION: &str = "2012-11-30";
/// The `x-ms-agent-name` header.
pub const AGENT_NAME: &str = "canarie-agent";
/// The report's limit is 4096 bytes (wire.py); a description stays far below it, and what
/// a human reads in the portal is one line anyway.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// A goal state is a few KiB.
const GOAL_STATE_BODY_CAP: usize = 256 * 1024;

/// Statuses worth another attempt: the WireServer is busy or not there yet after boot
/// (429, 5xx, 408), or the goal state moved on (410: read it again).
pub const WIRESERVER_RETRY_STATUSES: &[RangeInclusive<u16>] =
    &[408..=408, 410..=410, 429..=429, 500..=599];
/// Statuses that fail at once: the request itself is wrong.
pub const WIRESERVER_FAIL_FAST_STATUSES: &[u16] = &[400, 401, 403, 404, 405];

/// The health a VM reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// `Ready` or `NotReady`.
    pub state: HealthState,
    /// `Provisioning` or `ProvisioningFailed` with NotReady; none with Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HealthState {
    Ready,
    NotReady,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ready => "Ready",
            HealthState::NotReady => "NotReady",
        }
    }
}

impl Health {
    pub fn ready() -> Health {
        Health {
            state: HealthState::Ready,
            sub_status: None,
            description: None,
        }
    }

    /// NotReady with a sub-status and a description trimmed to [`MAX_DESCRIPTION_CHARS`].
    pub fn not_ready(sub_status: &str, description: &str) -> Health {
        Health {
            state: HealthState::NotReady,
            sub_status: Some(sub_status.to_string()),
            description: Some(trim_description(description)),
        }
    }
}

/// One line, no control characters, at most [`MAX_DESCRIPTION_CHARS`] characters.
pub fn trim_description(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    if one_line.chars().count() <= MAX_DESCRIPTION_CHARS {
        return one_line.to_string();
    }
    let mut cut: String = one_line.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// What a health report names: the goal state it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoalState {
    pub incarnation: String,
    pub container_id: String,
    pub instance_id: String,
}

impl GoalState {
    /// Parses the goal state XML as WALinuxAgent does: `Incarnation`,
    /// `Container/ContainerId`, the first `RoleInstance`'s `InstanceId`.
    pub fn parse(xml: &str) -> Result<GoalState> {
        let doc = roxmltree::Document::parse(xml).context("the goal state is not XML")?;
        let find = |node: roxmltree::Node<'_, '_>, name: &str| {
            node.descendants()
                .find(|n| n.is_element() && n.tag_name().name() == name)
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let root = doc.root_element();
        let instance = root
            .descendants()
            .find(|n| n.is_element() && n.tag_name().name() == "RoleInstance")
            .context("the goal state has no RoleInstance")?;
        Ok(GoalState {
            incarnation: find(root, "Incarnation").context("the goal state has no Incarnation")?,
            container_id: find(root, "ContainerId").context("the goal state has no ContainerId")?,
            instance_id: find(instance, "InstanceId")
                .context("the goal state's RoleInstance has no InstanceId")?,
        })
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `Health` document WALinuxAgent posts (wire.py's `_build_health_report`).
pub fn health_xml(goal: &GoalState, health: &Health) -> String {
    let details = match &health.sub_status {
        Some(sub) => format!(
            "<Details><SubStatus>{}</SubStatus><Description>{}</Description></Details>",
            escape(sub),
            escape(health.description.as_deref().unwrap_or(""))
        ),
        None => String::new(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><GoalStateIncarnation>{}</GoalStateIncarnation><Container><ContainerId>{}</ContainerId><RoleInstanceList><Role><InstanceId>{}</InstanceId><Health><State>{}</State>{details}</Health></Role></RoleInstanceList></Container></Health>",
        escape(&goal.incarnation),
        escape(&goal.container_id),
        escape(&goal.instance_id),
        health.state.as_str(),
    )
}

/// The body of a 2xx answer, or the attempt's error classified by the retry list.
async fn success_body(resp: reqwest::Response, what: &str) -> Result<Vec<u8>, AttemptError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_capped(resp, GOAL_STATE_BODY_CAP)
        .await
        .map_err(AttemptError::retry)?;
    if status.is_success() {
        return Ok(body);
    }
    Err(http::status_error(
        status,
        &headers,
        &body,
        WIRESERVER_RETRY_STATUSES,
        what,
    ))
}

#[derive(Debug, Clone)]
pub struct WireServerClient {
    base: url::Url,
    http: reqwest::Client,
    policy: RetryPolicy,
}

impl WireServerClient {
    pub fn new(base_url: &str, policy: RetryPolicy) -> Result<Self> {
        let base = http::plain_http_url(base_url, "WireServer")?;
        Ok(WireServerClient {
            base,
            // The same rules as IMDS: never a proxy, never a redirect.
            http: http::imds_client()?,
            policy,
        })
    }

    fn url(&self, path: &str, comp: &str) -> url::Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url.query_pairs_mut().clear().append_pair("comp", comp);
        url
    }

    async fn goal_state_once(&self) -> Result<GoalState, AttemptError> {
        let resp = self
            .http
            .get(self.url("/machine/", "goalstate"))
            .header("x-ms-agent-name", AGENT_NAME)
            .header("x-ms-version", PROTOCOL_VERSION)
            .send()
            .await
            .map_err(|e| transport_error(e, "the WireServer"))?;
        let body = success_body(resp, "WireServer goal state").await?;
        let text = String::from_utf8_lossy(&body);
        // A goal state without a RoleInstance happens while the platform is still writing
        // it (WALinuxAgent retries the same): another attempt.
        GoalState::parse(&text).map_err(AttemptError::retry)
    }

    async fn post_once(&self, goal: &GoalState, health: &Health) -> Result<(), AttemptError> {
        let resp = self
            .http
            .post(self.url("/machine", "health"))
            .header("x-ms-agent-name", AGENT_NAME)
            .header("x-ms-version", PROTOCOL_VERSION)
            .header("Content-Type", "text/xml;charset=utf-8")
            .body(health_xml(goal, health))
            .send()
            .await
            .map_err(|e| transport_error(e, "the WireServer"))?;
        success_body(resp, "WireServer health report").await?;
        Ok(())
    }

    /// Reports `health`: each attempt reads the goal state first, so a report refused
    /// because the incarnation moved on is sent again against the new one. Returns the
    /// incarnation the accepted report named.
    pub async fn report(&self, health: &Health) -> Result<String> {
        retry(&self.policy, "WireServer health report", || async {
            let goal = self.goal_state_once().await?;
            self.post_once(&goal, health).await?;
            Ok(goal.incarnation)
        })
        .await
        .with_context(|| {
            format!(
                "reporting {} to the WireServer at {}",
                health.state.as_str(),
                self.base
            )
        })
    }
}

/// Timing of WireServer reports: it may be unreachable for a while after boot, and a
/// report that cannot get through must not hold the node's boot for long.
pub const WIRESERVER_POLICY: RetryPolicy = RetryPolicy {
    deadline: Duration::from_secs(300),
    attempt_timeout: Duration::from_secs(15),
    min_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(15),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_one_trimmed_line() {
        assert_eq!(trim_description(" a\nb\t "), "a b");
        let long = "é".repeat(5000);
        let cut = trim_description(&long);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(cut.len() < 4096);
    }

    #[test]
    fn the_report_escapes_and_round_trips() {
        let goal = GoalState {
            incarnation: "2".into(),
            container_id: "c".into(),
            instance_id: "i".into(),
        };
        let xml = health_xml(&goal, &Health::not_ready("ProvisioningFailed", "a <b> & c"));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let text = |name: &str| {
            doc.descendants()
                .find(|n| n.tag_name().name() == name)
                .and_then(|n| n.text())
                .unwrap()
                .to_string()
        };
        assert_eq!(text("Description"), "a <b> & c");
        assert_eq!(text("State"), "NotReady");
        assert!(!health_xml(&goal, &Health::ready()).contains("Details"));
        assert!(GoalState::parse("<GoalState><Incarnation>1</Incarnation></GoalState>").is_err());
    }
}
