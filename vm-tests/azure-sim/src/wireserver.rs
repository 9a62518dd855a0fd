//! The simulated WireServer (168.63.129.16, plain HTTP): protocol versions, the goal state
//! and the two health report styles the platform's own agents send, shaped after what
//! WALinuxAgent's wire.py / goal_state.py request and parse (see docs/azure-sim.md).

use bytes::Bytes;
use serde::Deserialize;

use crate::reply::Reply;
use crate::rules::{Endpoint, MatchCtx, Plan, Service};
use crate::server::RequestInfo;
use crate::state::{HealthRecord, State};

/// The only wire protocol version WALinuxAgent and canarie-agent speak; goal state and
/// health requests must name it in `x-ms-version`.
pub const PROTOCOL_VERSION: &str = "2012-11-30";
/// The report limit WALinuxAgent trims its description against (wire.py: "The max
/// description that can be sent to WireServer is 4096 bytes").
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Larger bodies are refused before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const HEALTH_STATES: &[&str] = &["Ready", "NotReady"];

/// The endpoint a request belongs to, for rule matching.
pub(crate) fn classify(method: &str, path: &str, query: &str) -> Option<Endpoint> {
    let comp = comp(query);
    match (method, path, comp.as_deref()) {
        (_, "/", Some("versions")) => Some(Endpoint::Versions),
        (_, "/machine" | "/machine/", Some("goalstate")) => Some(Endpoint::GoalState),
        (_, "/machine" | "/machine/", Some("health")) => Some(Endpoint::Health),
        (_, "/provisioning/health", _) => Some(Endpoint::Health),
        _ => None,
    }
}

fn comp(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "comp")
        .map(|(_, value)| value.to_string())
}

fn xml(status: u16, body: String) -> Reply {
    Reply {
        status,
        headers: vec![("Content-Type".into(), "text/xml; charset=utf-8".into())],
        body: Bytes::from(body),
    }
}

/// XML error body; the real service's error bodies are not documented, so clients must
/// not depend on anything but the status.
fn error(status: u16, message: &str) -> Reply {
    xml(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
            status,
            escape(message)
        ),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What the handler learned besides the answer: the parsed health report, if any.
pub(crate) struct Outcome {
    pub plan: Plan,
    pub health: Option<HealthRecord>,
}

pub(crate) fn handle(state: &State, req: &RequestInfo) -> Outcome {
    let endpoint = classify(&req.method, &req.path, &req.query);
    let ctx = MatchCtx {
        service: Service::WireServer,
        endpoint,
        secret_name: None,
        secret_id: None,
        tenant: &state.scenario.tenant_id,
    };
    // Parsed up front so the request log holds the report even when a rule answers it.
    let parsed = match endpoint {
        Some(Endpoint::Health) if req.path == "/provisioning/health" => Some(parse_json(req)),
        Some(Endpoint::Health) => Some(parse_xml(req)),
        _ => None,
    };
    let health = parsed
        .as_ref()
        .and_then(|p| p.as_ref().ok().map(|p| p.record.clone()));
    let plan = state.rules().plan(&ctx, || match endpoint {
        Some(Endpoint::Versions) if req.method == "GET" => versions(),
        Some(Endpoint::GoalState) if req.method == "GET" => match check_version(req) {
            Some(reply) => reply,
            None => goal_state(state, req),
        },
        Some(Endpoint::Health) if req.method == "POST" => match parsed {
            Some(Ok(report)) => accept_health(state, req, report),
            Some(Err(reply)) => reply,
            None => error(500, "unreachable: a health request without a parse result"),
        },
        Some(_) => error(405, "method not allowed"),
        None => match config(state, req) {
            Some(reply) => reply,
            None => error(404, "not found"),
        },
    });
    if plan.new_incarnation {
        let next = state.next_incarnation();
        tracing::info!("wireserver: goal state moves to incarnation {next}");
    }
    Outcome { plan, health }
}

fn check_version(req: &RequestInfo) -> Option<Reply> {
    match req.ms_version.as_deref() {
        Some(PROTOCOL_VERSION) => None,
        Some(other) => Some(error(
            400,
            &format!("unsupported x-ms-version {other}; this WireServer speaks {PROTOCOL_VERSION}"),
        )),
        None => Some(error(400, "the x-ms-version header is required")),
    }
}

fn versions() -> Reply {
    xml(
        200,
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Versions>\n  <Preferred>\n    <Version>2015-04-05</Version>\n  </Preferred>\n  <Supported>\n    <Version>2015-04-05</Version>\n    <Version>{PROTOCOL_VERSION}</Version>\n    <Version>2010-12-15</Version>\n  </Supported>\n</Versions>\n"
        ),
    )
}

/// The base URL clients used to reach us (the goal state names its config documents by
/// absolute URL, like Azure's names them on 168.63.129.16:80).
fn base(req: &RequestInfo) -> String {
    format!("http://{}", req.host)
}

fn config_path(state: &State) -> String {
    let wire = &state.scenario.wireserver;
    format!("/machine/{}/{}", wire.container_id, wire.role_instance_id)
}

fn goal_state(state: &State, req: &RequestInfo) -> Reply {
    let wire = &state.scenario.wireserver;
    let incarnation = state.incarnation();
    let config = format!("{}{}", base(req), config_path(state));
    xml(
        200,
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2010-12-15</Version>
  <Incarnation>{incarnation}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts>
      <Port>16001</Port>
    </LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>{container}</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>{instance}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>{config}?comp=config&amp;type=hostingEnvironmentConfig&amp;incarnation={incarnation}</HostingEnvironmentConfig>
          <SharedConfig>{config}?comp=config&amp;type=sharedConfig&amp;incarnation={incarnation}</SharedConfig>
          <ConfigName>{instance}.1.xml</ConfigName>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"#,
            container = escape(&wire.container_id),
            instance = escape(&wire.role_instance_id),
            config = escape(&config),
        ),
    )
}

/// `GET /machine/<container>/<instance>?comp=config&type=...`: the two documents
/// WALinuxAgent's full goal state fetch reads (it needs names from HostingEnvironmentConfig;
/// SharedConfig it keeps as text).
fn config(state: &State, req: &RequestInfo) -> Option<Reply> {
    if req.path != config_path(state) || comp(&req.query).as_deref() != Some("config") {
        return None;
    }
    if let Some(reply) = check_version(req) {
        return Some(reply);
    }
    let kind = url::form_urlencoded::parse(req.query.as_bytes())
        .find(|(key, _)| key == "type")
        .map(|(_, value)| value.to_string());
    let wire = &state.scenario.wireserver;
    let role = wire
        .role_instance_id
        .rsplit_once('.')
        .map_or(wire.role_instance_id.as_str(), |(_, role)| role);
    let role_name = role.split("_IN_").next().unwrap_or(role);
    let deployment = wire
        .role_instance_id
        .split_once('.')
        .map_or(wire.container_id.as_str(), |(deployment, _)| deployment);
    Some(match kind.as_deref() {
        Some("hostingEnvironmentConfig") => xml(
            200,
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?>
<HostingEnvironmentConfig version="1.0.0.0" goalStateIncarnation="{incarnation}">
  <StoredCertificates />
  <Deployment name="{deployment}" guid="{{{deployment}}}" incarnation="0" isNonCancellableTopologyChangeEnabled="false">
    <Service name="{vm}" guid="{{00000000-0000-0000-0000-000000000000}}" />
    <ServiceInstance name="{deployment}.0" guid="{{{container}}}" />
  </Deployment>
  <Incarnation number="1" instance="{role}" guid="{{{container}}}" />
  <Role guid="{{{container}}}" name="{role_name}" hostingEnvironmentVersion="1" software="" softwareType="ApplicationPackage" entryPoint="" parameters="" settleTimeSeconds="10" />
</HostingEnvironmentConfig>
"#,
                incarnation = state.incarnation(),
                deployment = escape(deployment),
                container = escape(&wire.container_id),
                vm = escape(&state.scenario.name),
                role = escape(role),
                role_name = escape(role_name),
            ),
        ),
        Some("sharedConfig") => xml(
            200,
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?>
<SharedConfig version="1.0.0.0" goalStateIncarnation="{incarnation}">
  <Deployment name="{deployment}" guid="{{{deployment}}}" incarnation="0" isNonCancellableTopologyChangeEnabled="false" />
  <Instances>
    <Instance id="{role}" address="{ip}" />
  </Instances>
</SharedConfig>
"#,
                incarnation = state.incarnation(),
                deployment = escape(deployment),
                role = escape(role),
                ip = escape(&state.scenario.private_ip),
            ),
        ),
        _ => error(404, "unknown config type"),
    })
}

/// `POST /machine?comp=health`: WALinuxAgent's `Health` document.
fn parse_xml(req: &RequestInfo) -> Result<Parsed, Reply> {
    if let Some(reply) = check_version(req) {
        return Err(reply);
    }
    let text =
        std::str::from_utf8(&req.body).map_err(|_| error(400, "the health report is not UTF-8"))?;
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| error(400, &format!("the health report is not XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Health" {
        return Err(error(
            400,
            "the health report's root element must be <Health>",
        ));
    }
    let incarnation = text_of(child(root, "GoalStateIncarnation"));
    let container = child(root, "Container");
    let container_id = text_of(container.and_then(|c| child(c, "ContainerId")));
    let role = container
        .and_then(|c| child(c, "RoleInstanceList"))
        .and_then(|l| child(l, "Role"));
    let instance_id = text_of(role.and_then(|r| child(r, "InstanceId")));
    let health = role.and_then(|r| child(r, "Health"));
    let state_text = text_of(health.and_then(|h| child(h, "State")));
    let details = health.and_then(|h| child(h, "Details"));
    let (Some(_), Some(_), Some(_), Some(state_text)) =
        (&incarnation, &container_id, &instance_id, state_text)
    else {
        return Err(error(
            400,
            "the health report needs GoalStateIncarnation, Container/ContainerId, RoleInstanceList/Role/InstanceId and Health/State",
        ));
    };
    let record = HealthRecord {
        protocol: "xml".into(),
        state: state_text,
        sub_status: text_of(details.and_then(|d| child(d, "SubStatus"))),
        description: text_of(details.and_then(|d| child(d, "Description"))),
        incarnation,
    };
    check_record(&record)?;
    Ok(Parsed {
        record,
        ids: container_id.zip(instance_id),
    })
}

/// The first child element named `name` (namespaces ignored, like WALinuxAgent's
/// `find`).
fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text_of(node: Option<roxmltree::Node<'_, '_>>) -> Option<String> {
    node.map(|n| n.text().unwrap_or("").to_string())
}

/// A health report that parsed: what is recorded, and (XML) the container and role
/// instance it names.
struct Parsed {
    record: HealthRecord,
    ids: Option<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHealth {
    state: String,
    #[serde(default)]
    details: Option<JsonDetails>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonDetails {
    sub_status: Option<String>,
    description: Option<String>,
}

/// `POST /provisioning/health`: azure-init's JSON report.
fn parse_json(req: &RequestInfo) -> Result<Parsed, Reply> {
    if !req
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/json"))
    {
        return Err(error(
            400,
            "the JSON health report needs content-type application/json",
        ));
    }
    let report: JsonHealth = serde_json::from_slice(&req.body)
        .map_err(|e| error(400, &format!("the health report is not valid JSON: {e}")))?;
    let details = report.details.unwrap_or(JsonDetails {
        sub_status: None,
        description: None,
    });
    let record = HealthRecord {
        protocol: "json".into(),
        state: report.state,
        sub_status: details.sub_status,
        description: details.description,
        incarnation: None,
    };
    check_record(&record)?;
    Ok(Parsed { record, ids: None })
}

fn check_record(record: &HealthRecord) -> Result<(), Reply> {
    if !HEALTH_STATES.contains(&record.state.as_str()) {
        return Err(error(
            400,
            &format!("health state {:?} is not Ready or NotReady", record.state),
        ));
    }
    if record
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_BYTES)
    {
        return Err(error(
            400,
            &format!("the description is longer than {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn accept_health(state: &State, req: &RequestInfo, parsed: Parsed) -> Reply {
    let report = parsed.record;
    if let Some((container_id, instance_id)) = parsed.ids {
        let wire = &state.scenario.wireserver;
        if container_id != wire.container_id || instance_id != wire.role_instance_id {
            return error(400, "the report names another container or role instance");
        }
        let current = state.incarnation().to_string();
        if report.incarnation.as_deref() != Some(current.as_str()) {
            // A report against an old goal state: the client must read the goal state
            // again (WALinuxAgent treats 410 Gone as "refresh the goal state").
            return error(410, "the goal state incarnation changed; read it again");
        }
    } else if req.guest_agent_name.is_none() {
        return error(400, "the x-ms-guest-agent-name header is required");
    }
    Reply {
        status: 200,
        headers: Vec::new(),
        body: Bytes::new(),
    }
}
