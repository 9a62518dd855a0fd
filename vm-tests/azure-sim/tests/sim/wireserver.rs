//! The WireServer: versions, goal state (as WALinuxAgent parses it), both health report
//! styles recorded in the request log, its faults, and osProfile/publicKeys in IMDS.

use serde_json::json;

use crate::support::{answer, imds, rules, start};

const GOAL_STATE: &str = "/machine/?comp=goalstate";
const HEALTH: &str = "/machine?comp=health";
const CONTAINER: &str = "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2";
const INSTANCE: &str = "b61f93d0-e1ed-40b2-b067-22c243233448.MachineRole_IN_0";

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(sim: &azure_sim::Sim, path: &str, version: Option<&str>) -> crate::support::Answer {
    let mut request = http()
        .get(format!("{}{path}", sim.wireserver_url()))
        .header("x-ms-agent-name", "test");
    if let Some(version) = version {
        request = request.header("x-ms-version", version);
    }
    answer(request).await
}

fn health_xml(incarnation: &str, state: &str, details: Option<(&str, &str)>) -> String {
    let details = details.map_or(String::new(), |(sub, description)| {
        format!("<Details><SubStatus>{sub}</SubStatus><Description>{description}</Description></Details>")
    });
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><GoalStateIncarnation>{incarnation}</GoalStateIncarnation><Container><ContainerId>{CONTAINER}</ContainerId><RoleInstanceList><Role><InstanceId>{INSTANCE}</InstanceId><Health><State>{state}</State>{details}</Health></Role></RoleInstanceList></Container></Health>"
    )
}

async fn post_health(sim: &azure_sim::Sim, body: String) -> crate::support::Answer {
    answer(
        http()
            .post(format!("{}{HEALTH}", sim.wireserver_url()))
            .header("x-ms-agent-name", "test")
            .header("x-ms-version", "2012-11-30")
            .header("Content-Type", "text/xml;charset=utf-8")
            .body(body),
    )
    .await
}

fn element<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> String {
    doc.descendants()
        .find(|n| n.tag_name().name() == name)
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no <{name}>"))
        .to_string()
}

#[tokio::test]
async fn versions_and_goal_state() {
    let sim = start(json!({})).await;
    let versions = get(&sim, "/?comp=versions", None).await;
    assert_eq!(versions.status, 200);
    let doc = roxmltree::Document::parse(&versions.text).unwrap();
    assert!(doc
        .descendants()
        .any(|n| n.tag_name().name() == "Version" && n.text() == Some("2012-11-30")));

    assert_eq!(get(&sim, GOAL_STATE, None).await.status, 400);
    assert_eq!(get(&sim, GOAL_STATE, Some("2099-01-01")).await.status, 400);
    let goal = get(&sim, GOAL_STATE, Some("2012-11-30")).await;
    assert_eq!(goal.status, 200, "{}", goal.text);
    let doc = roxmltree::Document::parse(&goal.text).unwrap();
    assert_eq!(element(&doc, "Incarnation"), "1");
    assert_eq!(element(&doc, "ContainerId"), CONTAINER);
    assert_eq!(element(&doc, "InstanceId"), INSTANCE);

    // The config documents a full goal state fetch follows.
    let hosting = element(&doc, "HostingEnvironmentConfig");
    let path = hosting.strip_prefix(&sim.wireserver_url()).unwrap();
    let config = get(&sim, path, Some("2012-11-30")).await;
    assert_eq!(config.status, 200, "{}", config.text);
    let doc = roxmltree::Document::parse(&config.text).unwrap();
    let role = doc
        .descendants()
        .find(|n| n.tag_name().name() == "Role")
        .unwrap();
    assert_eq!(role.attribute("name"), Some("MachineRole"));
}

#[tokio::test]
async fn health_reports_are_recorded_and_checked() {
    let sim = start(json!({"wireserver": {"incarnation": 3}})).await;
    let answer = post_health(
        &sim,
        health_xml(
            "3",
            "NotReady",
            Some((
                "ProvisioningFailed",
                "join-token: Key Vault denied &amp; more",
            )),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        post_health(&sim, health_xml("3", "Ready", None))
            .await
            .status,
        200
    );
    let reports = sim.health_reports();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].state, "NotReady");
    assert_eq!(reports[0].sub_status.as_deref(), Some("ProvisioningFailed"));
    assert_eq!(
        reports[0].description.as_deref(),
        Some("join-token: Key Vault denied & more")
    );
    assert_eq!(reports[0].incarnation.as_deref(), Some("3"));
    assert_eq!(
        (reports[1].state.as_str(), reports[1].sub_status.as_deref()),
        ("Ready", None)
    );
    let last = sim.requests().pop().unwrap();
    assert_eq!(
        (last.service.as_str(), last.agent_name.as_deref()),
        ("wireserver", Some("test"))
    );

    // A stale incarnation is refused with 410 (read the goal state again) but still logged.
    sim.next_incarnation();
    assert_eq!(
        post_health(&sim, health_xml("3", "Ready", None))
            .await
            .status,
        410
    );
    assert_eq!(sim.requests().last().unwrap().status, 410);
    assert_eq!(
        post_health(&sim, health_xml("4", "Ready", None))
            .await
            .status,
        200
    );

    // Bad reports: unknown state, another container, not XML, description over the limit.
    assert_eq!(
        post_health(&sim, health_xml("4", "Fine", None))
            .await
            .status,
        400
    );
    let other = health_xml("4", "Ready", None).replace(CONTAINER, "another");
    assert_eq!(post_health(&sim, other).await.status, 400);
    assert_eq!(post_health(&sim, "<Health".into()).await.status, 400);
    let long = "x".repeat(4097);
    let answer = post_health(
        &sim,
        health_xml("4", "NotReady", Some(("ProvisioningFailed", &long))),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        sim.health_reports().len(),
        3,
        "only accepted reports are listed"
    );
    let logged = sim.requests().iter().filter(|r| r.health.is_some()).count();
    assert_eq!(
        logged, 5,
        "the log keeps every report that parsed, with its status"
    );
}

#[tokio::test]
async fn json_health_reports() {
    let sim = start(json!({})).await;
    let url = format!("{}/provisioning/health", sim.wireserver_url());
    let ok = answer(
        http()
            .post(&url)
            .header("x-ms-guest-agent-name", "azure-init")
            .json(&json!({"state": "NotReady", "details": {"subStatus": "Provisioning", "description": "starting"}})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let missing_agent = answer(http().post(&url).json(&json!({"state": "Ready"}))).await;
    assert_eq!(missing_agent.status, 400);
    let report = &sim.health_reports()[0];
    assert_eq!(
        (report.protocol.as_str(), report.sub_status.as_deref()),
        ("json", Some("Provisioning"))
    );
}

#[tokio::test]
async fn wireserver_faults() {
    let sim = start(json!({})).await;
    // Unreachable for a while: connections closed without an answer.
    sim.set_rules(rules(
        json!([{ "endpoint": "wireserver", "close": true, "times": 1 }]),
    ));
    let closed = http()
        .get(format!("{}{GOAL_STATE}", sim.wireserver_url()))
        .header("x-ms-version", "2012-11-30")
        .send()
        .await;
    assert!(
        closed.is_err(),
        "a closed connection is an error, not a status"
    );
    assert_eq!(get(&sim, GOAL_STATE, Some("2012-11-30")).await.status, 200);

    sim.set_rules(rules(json!([
        { "endpoint": "health", "status": 503, "times": 1 },
        { "endpoint": "goal_state", "status": 429, "headers": {"Retry-After": "1"}, "times": 1 }
    ])));
    assert_eq!(
        post_health(&sim, health_xml("1", "Ready", None))
            .await
            .status,
        503
    );
    assert_eq!(get(&sim, GOAL_STATE, Some("2012-11-30")).await.status, 429);

    // The incarnation moves on right after a goal state read.
    sim.set_rules(rules(
        json!([{ "preset": "wire_new_incarnation", "times": 1 }]),
    ));
    let goal = get(&sim, GOAL_STATE, Some("2012-11-30")).await;
    let doc = roxmltree::Document::parse(&goal.text).unwrap();
    assert_eq!(element(&doc, "Incarnation"), "1");
    assert_eq!(sim.incarnation(), 2);
    assert_eq!(
        post_health(&sim, health_xml("1", "Ready", None))
            .await
            .status,
        410
    );
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.rule.as_deref() == Some("wire_new_incarnation"))
            .count(),
        1
    );

    let bad = sim.try_set_rules(rules(
        json!([{ "preset": "wire_new_incarnation", "endpoint": "token" }]),
    ));
    assert!(bad.is_err());
}

#[tokio::test]
async fn os_profile_and_public_keys_in_instance_metadata() {
    let sim = start(json!({
        "name": "wk-01",
        "admin_username": "opsadmin",
        "computer_name": "wk-01.internal",
        "public_keys": [{"key_data": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOp test", "path": "/home/opsadmin/.ssh/authorized_keys"}]
    }))
    .await;
    let doc = imds(&sim, "/metadata/instance?api-version=2023-11-15")
        .await
        .json();
    let compute = &doc["compute"];
    assert_eq!(compute["osProfile"]["adminUsername"], "opsadmin");
    assert_eq!(compute["osProfile"]["computerName"], "wk-01.internal");
    assert_eq!(
        compute["osProfile"]["disablePasswordAuthentication"],
        "true"
    );
    assert_eq!(
        compute["publicKeys"],
        json!([{"keyData": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOp test", "path": "/home/opsadmin/.ssh/authorized_keys"}])
    );
    let default = start(json!({"name": "cp-01"})).await;
    let doc = imds(&default, "/metadata/instance?api-version=2023-11-15")
        .await
        .json();
    assert_eq!(doc["compute"]["osProfile"]["computerName"], "cp-01");
    assert_eq!(doc["compute"]["osProfile"]["adminUsername"], "azureuser");

    let bad =
        azure_sim::Scenario::from_json(r#"{"public_keys": [{"key_data": "k", "path": "rel"}]}"#);
    assert!(format!("{:#}", bad.err().unwrap()).contains("public_keys[0]"));
}
