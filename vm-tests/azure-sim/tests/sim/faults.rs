//! Scripted faults: every preset, rule matching (endpoint, secret, window, count), overrides,
//! and the delivery modifiers (delay, hang, trickle).

use std::time::Duration;

use azure_sim::Scenario;
use serde_json::json;

use crate::support::{client, imds, reference, rules, start, token, vault, TOKEN_QUERY};

const INSTANCE: &str = "/metadata/instance?api-version=2023-11-15";
const SECRET: &str = "/secrets/join-token?api-version=2025-07-01";

fn observed(name: &str) -> serde_json::Value {
    reference(&format!("keyvault/observed/{name}.json"))["body"].clone()
}

#[tokio::test]
async fn imds_presets() {
    let sim = start(json!({})).await;
    for (preset, status) in [
        ("imds_410", 410),
        ("imds_429", 429),
        ("imds_404_updating", 404),
    ] {
        sim.set_rules(rules(json!([{ "preset": preset }])));
        for path in [INSTANCE, TOKEN_QUERY] {
            let answer = imds(&sim, path).await;
            assert_eq!(answer.status, status, "{preset} {path}");
            assert_eq!(answer.header("Retry-After"), None);
        }
        assert_eq!(sim.requests().last().unwrap().rule.as_deref(), Some(preset));
    }

    sim.set_rules(rules(json!([{ "preset": "imds_429_retry_after" }])));
    let answer = imds(&sim, INSTANCE).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("Retry-After").as_deref(), Some("1"));

    // Token-only presets leave the instance endpoint alone.
    let not_found = reference("imds/docs-derived/token-error-responses.json")["identity_not_found"]
        ["body"]
        .clone();
    for (preset, status, body) in [
        (
            "token_500",
            500,
            json!({"error": "unknown", "error_description": "Failed to retrieve token from the Active directory…"}),
        ),
        ("identity_not_found", 400, not_found),
    ] {
        sim.set_rules(rules(json!([{ "preset": preset }])));
        let answer = imds(&sim, TOKEN_QUERY).await;
        assert_eq!((answer.status, answer.json()), (status, body), "{preset}");
        assert_eq!(imds(&sim, INSTANCE).await.status, 200, "{preset}");
    }
}

#[tokio::test]
async fn malformed_imds_requests_get_the_real_400_even_under_a_rule() {
    let sim = start(json!({"rules": [{"preset": "imds_410"}]})).await;
    let no_header =
        crate::support::answer(client(&sim).get(format!("{}{INSTANCE}", sim.imds_url()))).await;
    assert_eq!(no_header.status, 400);
    assert_eq!(imds(&sim, "/metadata/instance").await.status, 400);
    assert_eq!(imds(&sim, INSTANCE).await.status, 410);
}

#[tokio::test]
async fn key_vault_presets() {
    let sim = start(json!({
        "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "secrets": {"join-token": {"value": "v"}}
    }))
    .await;
    let token = token(&sim).await;
    for (preset, status, body) in [
        ("kv_401_invalid_issuer", 401, observed("401-invalid-issuer")),
        ("kv_403_rbac", 403, observed("403-forbidden-by-rbac")),
        ("kv_403_disabled", 403, observed("403-secret-disabled")),
        (
            "kv_403_access_denied",
            403,
            observed("403-access-policy-denied"),
        ),
        ("kv_429", 429, observed("429-throttled")),
    ] {
        sim.set_rules(rules(json!([{ "preset": preset }])));
        let answer = vault(&sim, SECRET, Some(&token)).await;
        assert_eq!((answer.status, answer.json()), (status, body), "{preset}");
        assert_eq!(answer.header("Retry-After"), None, "{preset}");
    }
    sim.set_rules(rules(json!([{ "preset": "kv_404" }])));
    let answer = vault(
        &sim,
        "/secrets/CRUDSecretName-candeleteasecret-/?api-version=2026-04-01",
        Some(&token),
    )
    .await;
    assert_eq!(
        (answer.status, answer.json()),
        (404, observed("404-secret-not-found"))
    );

    // The challenge is always real: a request without a token never reaches the rules.
    let challenge = vault(&sim, SECRET, None).await;
    assert_eq!(challenge.status, 401);
    assert!(challenge.text.contains("AKV10000"));
    assert_eq!(sim.requests().last().unwrap().rule, None);
}

#[tokio::test]
async fn times_counts_the_first_matching_requests() {
    let sim = start(json!({
        "rules": [{"preset": "token_500", "times": 2}, {"name": "slow-instance", "endpoint": "instance", "delay_ms": 50}]
    }))
    .await;
    assert_eq!(imds(&sim, INSTANCE).await.status, 200);
    assert_eq!(imds(&sim, TOKEN_QUERY).await.status, 500);
    assert_eq!(imds(&sim, TOKEN_QUERY).await.status, 500);
    assert_eq!(imds(&sim, TOKEN_QUERY).await.status, 200);
    let seen: Vec<(u16, Option<String>)> = sim
        .requests()
        .into_iter()
        .map(|r| (r.status, r.rule))
        .collect();
    assert_eq!(
        seen,
        vec![
            (200, Some("slow-instance".into())),
            (500, Some("token_500".into())),
            (500, Some("token_500".into())),
            (200, None),
        ]
    );
}

#[tokio::test]
async fn time_windows_open_and_close() {
    let sim = start(json!({})).await;
    // Windows far from "now" in either direction, so a slow machine cannot flip the outcome.
    sim.set_rules(rules(json!([{"preset": "imds_410", "until_s": 600}])));
    assert_eq!(imds(&sim, INSTANCE).await.status, 410);
    sim.set_rules(rules(json!([{"preset": "imds_410", "from_s": 600}])));
    assert_eq!(imds(&sim, INSTANCE).await.status, 200);
    sim.set_rules(rules(json!([{"preset": "imds_410", "until_s": 0.1}])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(imds(&sim, INSTANCE).await.status, 200);
}

#[tokio::test]
async fn secret_filter_and_overrides() {
    let sim = start(json!({
        "secrets": {"join-token": {"value": "v"}, "other": {"value": "w"}},
        "rules": [
            {"preset": "kv_403_rbac", "secret": "join-token", "until_s": 600},
            {"preset": "imds_429_retry_after", "endpoint": "instance", "headers": {"Retry-After": "7"}},
            {"endpoint": "user_data", "status": 200, "body": "not base64 at all!"},
            {"endpoint": "token", "status": 503, "body": {"error": "custom"}, "headers": {"X-Sim": "yes"}}
        ]
    }))
    .await;
    let limited = imds(&sim, INSTANCE).await;
    assert_eq!(
        (limited.status, limited.header("Retry-After")),
        (429, Some("7".into()))
    );
    let user_data = imds(
        &sim,
        "/metadata/instance/compute/userData?api-version=2021-01-01&format=text",
    )
    .await;
    assert_eq!(
        (user_data.status, user_data.text.as_str()),
        (200, "not base64 at all!")
    );
    let custom = imds(&sim, TOKEN_QUERY).await;
    assert_eq!(
        (custom.status, custom.json()),
        (503, json!({"error": "custom"}))
    );
    assert_eq!(custom.header("X-Sim").as_deref(), Some("yes"));
    assert!(custom
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));

    // Replace the token rule so a token can be had; the secret filter still applies.
    sim.set_rules(rules(
        json!([{"preset": "kv_403_rbac", "secret": "join-token"}]),
    ));
    let token = token(&sim).await;
    assert_eq!(vault(&sim, SECRET, Some(&token)).await.status, 403);
    let other = vault(&sim, "/secrets/other?api-version=2025-07-01", Some(&token)).await;
    assert_eq!(
        (other.status, other.json()["value"].clone()),
        (200, json!("w"))
    );
    assert_eq!(sim.requests().last().unwrap().error, None);
}

#[tokio::test]
async fn hang_accepts_and_never_answers() {
    let sim = start(json!({"rules": [{"preset": "hang", "endpoint": "token"}]})).await;
    let err = client(&sim)
        .get(format!("{}{TOKEN_QUERY}", sim.imds_url()))
        .header("Metadata", "true")
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    let record = sim.requests().pop().unwrap();
    assert_eq!((record.status, record.rule.as_deref()), (0, Some("hang")));
    // Other endpoints still answer while a request hangs.
    assert_eq!(imds(&sim, INSTANCE).await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_on_the_vault() {
    let sim = start(json!({"rules": [{"endpoint": "vault", "hang": true}]})).await;
    let token = token(&sim).await;
    let err = client(&sim)
        .get(format!("{}{SECRET}", sim.vault_url()))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn trickle_sends_the_whole_body_slowly() {
    let sim = start(json!({
        "rules": [{"endpoint": "user_data", "status": 200, "body": "abc", "trickle_ms": 10}]
    }))
    .await;
    let answer = imds(
        &sim,
        "/metadata/instance/compute/userData?api-version=2021-01-01&format=text",
    )
    .await;
    assert_eq!((answer.status, answer.text.as_str()), (200, "abc"));
    assert_eq!(answer.header("content-length").as_deref(), Some("3"));
}

#[tokio::test]
async fn trickle_preset_passes_the_real_answer_through_too_slowly_to_finish() {
    let sim = start(json!({"rules": [{"preset": "trickle", "endpoint": "instance"}]})).await;
    let response = client(&sim)
        .get(format!("{}{INSTANCE}", sim.imds_url()))
        .header("Metadata", "true")
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .expect("headers arrive at once");
    assert_eq!(response.status().as_u16(), 200);
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        length > 100,
        "the real instance document is announced in full"
    );
    let err = response
        .bytes()
        .await
        .expect_err("the body does not finish in time");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(sim.requests()[0].rule.as_deref(), Some("trickle"));
}

#[test]
fn invalid_rules_and_scenarios_are_explained() {
    let cases = [
        (
            json!({"rules": [{"preset": "kv_404", "endpoint": "token"}]}),
            "answers vault requests",
        ),
        (
            json!({"rules": [{"preset": "imds_410", "times": 0}]}),
            "`times` must be at least 1",
        ),
        (
            json!({"rules": [{"from_s": 5, "until_s": 1}]}),
            "must be less than",
        ),
        (
            json!({"rules": [{"hang": true, "trickle_ms": 5}]}),
            "never answers",
        ),
        (json!({"rules": [{"status": 1000}]}), "not an HTTP status"),
        (
            json!({"rules": [{"headers": {"bad header": "x"}}]}),
            "not a valid HTTP header name",
        ),
        (
            json!({"rules": [{"endpoint": "token", "secret": "a"}]}),
            "only matches Key Vault",
        ),
        (
            json!({"rules": [{"preset": "imds_999"}]}),
            "rules[0].preset",
        ),
        (
            json!({"secrets": {"a": {"value": "v", "enabeld": false}}}),
            "secrets.a",
        ),
        (json!({"vm_name": "x"}), "unknown field `vm_name`"),
        (
            json!({"user_data": "e30=", "user_data_json": {}}),
            "not both",
        ),
        (
            json!({"vault_rate_limit": {"requests": 0, "window_s": 10}}),
            "`requests` must be at least 1",
        ),
    ];
    for (scenario, expected) in cases {
        let err = Scenario::from_json(&scenario.to_string()).expect_err("rejected");
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{scenario}: {message}");
    }
    // Secret values never reach Debug output.
    let ok = Scenario::from_json(r#"{"secrets": {"a": {"value": "hush-hush"}}}"#).unwrap();
    assert!(!format!("{ok:?}").contains("hush-hush"));
}

#[tokio::test]
async fn set_rules_panics_and_try_set_rules_errors_on_invalid_rules() {
    let sim = start(json!({})).await;
    let bad = rules(json!([{"preset": "kv_404", "endpoint": "instance"}]));
    let err = sim.try_set_rules(bad.clone()).expect_err("rejected");
    assert!(format!("{err:#}").contains("kv_404"));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.set_rules(bad)));
    assert!(panicked.is_err());
}
