//! The `/_sim/` admin API on the IMDS listener, and the request log file.

use azure_sim::{RequestRecord, Sim, SimOptions};
use serde_json::json;

use crate::support::{answer, client, imds, scenario, token, vault, TOKEN_QUERY};

#[tokio::test]
async fn admin_api_changes_the_running_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("requests.jsonl");
    let sim = Sim::start(SimOptions {
        scenario: scenario(json!({})),
        request_log: Some(log_path.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let http = client(&sim);
    let admin = |path: &str| format!("{}/_sim/{path}", sim.imds_url());

    let put = answer(
        http.put(admin("secrets/join-token"))
            .body("K10::server:tok-value"),
    )
    .await;
    assert_eq!(put.status, 200);
    assert_eq!(put.json()["name"], "join-token");
    let token = token(&sim).await;
    let secret = vault(
        &sim,
        "/secrets/join-token?api-version=2025-07-01",
        Some(&token),
    )
    .await;
    assert_eq!(secret.json()["value"], "K10::server:tok-value");
    assert!(secret.json()["id"]
        .as_str()
        .unwrap()
        .ends_with(put.json()["version"].as_str().unwrap()));

    let disable = answer(http.put(admin("secrets/join-token/enabled")).body("false")).await;
    assert_eq!(disable.status, 204);
    let disabled = vault(
        &sim,
        "/secrets/join-token?api-version=2025-07-01",
        Some(&token),
    )
    .await;
    assert_eq!(disabled.status, 403);
    assert_eq!(
        answer(http.delete(admin("secrets/join-token")))
            .await
            .status,
        204
    );
    assert_eq!(
        answer(http.delete(admin("secrets/join-token")))
            .await
            .status,
        404
    );

    let user_data = "/metadata/instance/compute/userData?api-version=2021-01-01&format=text";
    assert_eq!(
        answer(http.put(admin("user-data")).body("eyJ4IjoxfQ=="))
            .await
            .status,
        204
    );
    assert_eq!(imds(&sim, user_data).await.text, "eyJ4IjoxfQ==");
    assert_eq!(answer(http.delete(admin("user-data"))).await.status, 204);
    assert_eq!(imds(&sim, user_data).await.text, "");

    let rules = json!([{"preset": "token_500", "times": 1}]).to_string();
    assert_eq!(
        answer(http.put(admin("rules")).body(rules)).await.status,
        204
    );
    assert_eq!(imds(&sim, TOKEN_QUERY).await.status, 500);
    let bad = answer(http.put(admin("rules")).body(r#"[{"preset": "nope"}]"#)).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("[0].preset"), "{}", bad.text);
    assert_eq!(answer(http.get(admin("whatever"))).await.status, 404);
    assert_eq!(answer(http.post(admin("rules"))).await.status, 405);

    let listed: Vec<RequestRecord> =
        serde_json::from_str(&answer(http.get(admin("requests"))).await.text).unwrap();
    assert_eq!(listed, sim.requests());
    assert!(
        listed.iter().all(|r| !r.path.starts_with("/_sim/")),
        "admin calls are not logged"
    );
    assert_eq!(listed.len(), 6);

    // The file has the same records, one JSON line each, and no token or secret value.
    let text = std::fs::read_to_string(&log_path).unwrap();
    let from_file: Vec<RequestRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(from_file, listed);
    assert!(!text.contains(&token));
    assert!(!text.contains("tok-value"));
    assert_eq!(from_file[0].service, "imds");
    assert_eq!(from_file[1].service, "vault");
    assert_eq!(from_file.last().unwrap().rule.as_deref(), Some("token_500"));
}
