//! Key Vault real behaviour: TLS with the per-run CA, the challenge, token checks, secrets,
//! throttling.

use std::net::SocketAddr;
use std::time::Duration;

use azure_sim::{Sim, SimOptions};
use serde_json::json;

use crate::support::{answer, client, imds, reference, scenario, start, token, vault};

const API: &str = "api-version=2025-07-01";

fn observed(name: &str) -> serde_json::Value {
    reference(&format!("keyvault/observed/{name}.json"))
}

#[tokio::test]
async fn tls_verifies_against_the_generated_ca_only() {
    let sim = Sim::start(SimOptions {
        extra_sans: vec!["kv.canarie.test".into()],
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let port = sim.vault_addr().port();
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    // IP SAN, the wildcard for real vault names, and an extra SAN.
    for host in ["127.0.0.1", "myvault.vault.azure.net", "kv.canarie.test"] {
        let http = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap())
            .resolve(host, loopback)
            .build()
            .unwrap();
        let url = format!("https://{host}:{port}/secrets/x?{API}");
        let answer = answer(http.get(url)).await;
        assert_eq!(answer.status, 401, "{host}");
    }
    // A client that does not trust this run's CA must fail the handshake.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("{}/secrets/x?{API}", sim.vault_url()))
        .send()
        .await
        .expect_err("an unknown CA is rejected");
    assert!(err.is_connect(), "{err:?}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sim.write_ca(&ca).unwrap();
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), sim.ca_pem());
    assert!(sim.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn no_token_gets_the_observed_challenge() {
    // The default tenant is the one in the recording, so header and body compare verbatim.
    let sim = start(json!({})).await;
    let expected = observed("401-challenge-no-token");
    for path in [
        "/secrets/join-token/?api-version=2026-04-01",
        "/secrets/join-token?api-version=2025-07-01",
    ] {
        let answer = vault(&sim, path, None).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.json(), expected["body"]);
        for name in [
            "WWW-Authenticate",
            "Content-Type",
            "Cache-Control",
            "x-ms-keyvault-service-version",
        ] {
            assert_eq!(
                answer.header(name).as_deref(),
                expected["headers"][name].as_str(),
                "{name}"
            );
        }
    }
    let other_tenant = start(json!({"tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"})).await;
    let challenge = vault(&other_tenant, &format!("/secrets/a?{API}"), None).await;
    assert_eq!(
        challenge.header("WWW-Authenticate").unwrap(),
        "Bearer authorization=\"https://login.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://vault.azure.net\""
    );
    // A non-bearer Authorization header is treated like none.
    let basic = answer(
        client(&other_tenant)
            .get(format!("{}/secrets/a?{API}", other_tenant.vault_url()))
            .header("Authorization", "Basic Zm9vOmJhcg=="),
    )
    .await;
    assert_eq!(basic.status, 401);
    assert!(other_tenant.requests().last().unwrap().has_authorization);
}

#[tokio::test]
async fn a_token_the_sim_did_not_issue_is_an_invalid_issuer() {
    let sim = start(json!({"tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"})).await;
    let expected = observed("401-invalid-issuer");
    let answer = vault(
        &sim,
        &format!("/secrets/a?{API}"),
        Some("eyJ0eXAi.forged.token"),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json(), expected["body"]);
    assert_eq!(
        answer.header("WWW-Authenticate").as_deref(),
        expected["headers"]["WWW-Authenticate"].as_str()
    );
}

#[tokio::test]
async fn a_token_for_another_resource_is_rejected() {
    let sim = start(json!({"secrets": {"a": {"value": "v"}}})).await;
    let arm = imds(
        &sim,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
    )
    .await;
    let arm_token = arm.json()["access_token"].as_str().unwrap().to_string();
    let answer = vault(&sim, &format!("/secrets/a?{API}"), Some(&arm_token)).await;
    assert_eq!(answer.status, 401);
    assert!(answer.text.contains("AKV10022"), "{}", answer.text);
}

#[tokio::test]
async fn secrets_are_served_with_versions_in_the_getsecret_shape() {
    let sim = start(json!({"secrets": {"join-token": {"value": "s3cret-one"}}})).await;
    let token = token(&sim).await;
    let example = reference("keyvault/secrets/2026-04-01/examples/GetSecret-example.json");
    let expected = &example["responses"]["200"]["body"];

    // The Python SDK's form: trailing slash, 2026-04-01.
    let latest = vault(
        &sim,
        "/secrets/join-token/?api-version=2026-04-01",
        Some(&token),
    )
    .await;
    assert_eq!(latest.status, 200);
    let body = latest.json();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&body), keys(expected));
    assert_eq!(keys(&body["attributes"]), keys(&expected["attributes"]));
    assert_eq!(body["value"], "s3cret-one");
    assert_eq!(body["attributes"]["enabled"], true);
    let id = body["id"].as_str().unwrap();
    let prefix = format!("{}/secrets/join-token/", sim.vault_url());
    let first_version = id
        .strip_prefix(&prefix)
        .expect("id names host, secret and version");
    assert_eq!(first_version.len(), 32);

    sim.set_secret("join-token", "s3cret-two");
    let now = vault(&sim, &format!("/secrets/join-token?{API}"), Some(&token)).await;
    assert_eq!(now.json()["value"], "s3cret-two");
    assert_ne!(now.json()["id"], body["id"]);
    let old = vault(
        &sim,
        &format!("/secrets/join-token/{first_version}?{API}"),
        Some(&token),
    )
    .await;
    assert_eq!(old.json()["value"], "s3cret-one");

    let log = serde_json::to_string(&sim.requests()).unwrap();
    for value in ["s3cret-one", "s3cret-two", token.as_str()] {
        assert!(
            !log.contains(value),
            "the request log must not hold {value}"
        );
    }
}

#[tokio::test]
async fn unknown_disabled_and_malformed_requests() {
    let sim = start(json!({"secrets": {"off": {"value": "v", "enabled": false}}})).await;
    let token = token(&sim).await;

    let missing = vault(
        &sim,
        &format!("/secrets/CRUDSecretName-candeleteasecret-?{API}"),
        Some(&token),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), observed("404-secret-not-found")["body"]);

    let disabled = vault(&sim, &format!("/secrets/off?{API}"), Some(&token)).await;
    assert_eq!(disabled.status, 403);
    assert_eq!(disabled.json(), observed("403-secret-disabled")["body"]);
    assert!(sim.set_secret_enabled("off", true));
    assert_eq!(
        vault(&sim, &format!("/secrets/off?{API}"), Some(&token))
            .await
            .status,
        200
    );

    let no_version = vault(&sim, "/secrets/off", Some(&token)).await;
    assert_eq!(no_version.status, 400);
    assert_eq!(no_version.json()["error"]["code"], "BadParameter");

    assert!(sim.remove_secret("off"));
    assert_eq!(
        vault(&sim, &format!("/secrets/off?{API}"), Some(&token))
            .await
            .status,
        404
    );
    let records = sim.requests();
    assert_eq!(records[1].error.as_deref(), Some("SecretNotFound"));
    assert_eq!(records[2].error.as_deref(), Some("SecretDisabled"));
    assert!(records[1].has_authorization);
}

#[tokio::test]
async fn the_vault_throttles_beyond_the_configured_rate() {
    let sim = start(json!({
        "secrets": {"a": {"value": "v"}},
        "vault_rate_limit": {"requests": 3, "window_s": 3600}
    }))
    .await;
    let token = token(&sim).await;
    let path = format!("/secrets/a?{API}");
    for _ in 0..3 {
        assert_eq!(vault(&sim, &path, Some(&token)).await.status, 200);
    }
    let throttled = vault(&sim, &path, Some(&token)).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.json(), observed("429-throttled")["body"]);
    assert_eq!(throttled.header("Retry-After"), None);
}

#[tokio::test]
async fn the_throttle_window_resets() {
    let sim = start(json!({
        "secrets": {"a": {"value": "v"}},
        "vault_rate_limit": {"requests": 1, "window_s": 0.2}
    }))
    .await;
    let token = token(&sim).await;
    let path = format!("/secrets/a?{API}");
    // Two requests in a row may straddle a window boundary, so look for a 429 first.
    let mut saw_429 = false;
    for _ in 0..20 {
        if vault(&sim, &path, Some(&token)).await.status == 429 {
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "the limit of 1 per window is enforced");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vault(&sim, &path, Some(&token)).await.status, 200);
}

#[tokio::test]
async fn non_loopback_listen_addresses_are_refused() {
    for (imds_listen, vault_listen) in [
        ("0.0.0.0:0", "127.0.0.1:0"),
        ("127.0.0.1:0", "10.1.2.3:443"),
    ] {
        let err = Sim::start(SimOptions {
            imds_listen: imds_listen.parse().unwrap(),
            vault_listen: vault_listen.parse().unwrap(),
            scenario: scenario(json!({})),
            ..SimOptions::default()
        })
        .await
        .err()
        .expect("refused");
        let message = format!("{err:#}");
        assert!(message.contains("loopback"), "{message}");
    }
    let ipv6 = Sim::start(SimOptions {
        imds_listen: "[::1]:0".parse().unwrap(),
        ..SimOptions::default()
    })
    .await;
    // ::1 is loopback; it may be unavailable in some containers, but never refused as non-loopback.
    if let Err(e) = ipv6 {
        assert!(
            !format!("{e:#}").contains("loopback addresses only"),
            "{e:#}"
        );
    }
}
