//! The twelve faults of azure-protocol.md, through real sockets against azure-sim: each is
//! retried to success, or fails clearly within the deadline, and no error shows a secret.

mod support;

use canarie_agent::azure::retry::{
    IMDS_FAIL_FAST_STATUSES, IMDS_RETRY_STATUSES, VAULT_FAIL_FAST_STATUSES, VAULT_RETRY_STATUSES,
};
use canarie_agent::azure::{AccessToken, ImdsClient, RetryPolicy, VAULT_RESOURCE};
use canarie_agent::config::Identity;
use serde_json::{json, Value};
use std::time::Duration;
use support::sim::{scenario, TestSim, FAST, JOIN_TOKEN, SECRET, VAULT};

const RBAC_WINDOW: Duration = Duration::from_secs(30);
/// The request paths whose answered statuses the tests check.
const TOKEN_PATH: &str = "oauth2/token";
const SECRETS_PATH: &str = "/secrets/";

/// A simulator whose scenario holds the fault `rules` (azure-sim rule objects).
async fn sim_with(rules: Value) -> TestSim {
    TestSim::start(scenario(json!({ "rules": rules }))).await
}

/// Reads the join token through the faults `rules` describe: it must arrive intact. The
/// simulator is returned for its request log.
async fn read_through(rules: Value) -> TestSim {
    let t = sim_with(rules).await;
    let value = read_secret(&t)
        .await
        .unwrap_or_else(|e| panic!("the read failed: {e:#}"));
    assert_eq!(value, JOIN_TOKEN);
    t
}

/// Reads the join token through `rules`: it must fail (see [`failed`]). The error chain and
/// the simulator are returned.
async fn read_fails_through(rules: Value) -> (String, TestSim) {
    let t = sim_with(rules).await;
    let msg = failed(read_secret(&t).await);
    (msg, t)
}

/// The error chain of a call that must fail; the error must show no secret.
fn failed<T>(result: anyhow::Result<T>) -> String {
    let Err(err) = result else {
        panic!("the call succeeded; it must fail")
    };
    assert_no_secret(&err);
    format!("{err:#}")
}

async fn read_secret(t: &TestSim) -> anyhow::Result<String> {
    let token = t.imds().token(VAULT_RESOURCE, None).await?;
    let secret = t
        .vault()
        .get_secret(VAULT, SECRET, &token, RBAC_WINDOW)
        .await?;
    Ok(secrecy::ExposeSecret::expose_secret(&secret.value).to_string())
}

fn assert_no_secret(err: &anyhow::Error) {
    for text in [format!("{err:#}"), format!("{err:?}")] {
        assert!(!text.contains(JOIN_TOKEN), "the join token leaked: {text}");
        assert!(
            !text.contains("sim-token") && !text.contains("eyJ"),
            "an access token leaked: {text}"
        );
    }
}

#[tokio::test]
async fn the_happy_path_reads_the_secret_with_every_imds_rule_kept() {
    let t = read_through(json!([])).await;
    for r in t.sim.requests() {
        if r.service == "imds" {
            assert!(r.has_metadata_header && !r.has_forwarded_for, "{r:?}");
        }
    }
    let token_req = t
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path.contains(TOKEN_PATH))
        .unwrap();
    assert!(
        token_req.query.contains("api-version=2018-02-01"),
        "{}",
        token_req.query
    );
    assert!(
        token_req
            .query
            .contains("resource=https%3A%2F%2Fvault.azure.net"),
        "{}",
        token_req.query
    );
}

// Fault 1: IMDS 410 while the host boots.
#[tokio::test]
async fn f01_imds_410_during_boot_is_waited_out() {
    let t = read_through(json!([{"preset": "imds_410", "until_s": 1.5}])).await;
    let s = t.statuses(TOKEN_PATH);
    assert!(
        s.len() >= 2 && s[0] == 410 && *s.last().unwrap() == 200,
        "{s:?}"
    );
}

// Fault 2: IMDS 429, with and without Retry-After.
#[tokio::test]
async fn f02_imds_429_is_retried_and_retry_after_is_honoured() {
    let t = read_through(json!([{"preset": "imds_429", "times": 2}])).await;
    assert_eq!(t.statuses(TOKEN_PATH), vec![429, 429, 200]);

    let t = read_through(
        json!([{"preset": "imds_429_retry_after", "times": 1, "headers": {"Retry-After": "1"}}]),
    )
    .await;
    let reqs: Vec<_> = t
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(TOKEN_PATH))
        .collect();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let gap = reqs[1].elapsed_ms - reqs[0].elapsed_ms;
    assert!(
        gap >= 900,
        "Retry-After: 1 was not honoured (retried after {gap} ms)"
    );
}

// Fault 3: token endpoint 500 "Failed to retrieve token from the Active directory".
#[tokio::test]
async fn f03_token_500_is_retried() {
    let t = read_through(json!([{"preset": "token_500", "times": 2}])).await;
    assert_eq!(t.statuses(TOKEN_PATH), vec![500, 500, 200]);
}

// Fault 4: 404 while IMDS is updating, on every endpoint the agent uses.
#[tokio::test]
async fn f04_imds_404_while_updating_is_retried_everywhere() {
    let t = TestSim::start(scenario(json!({
        "user_data": "eyJ2ZXJzaW9uIjoxfQ==",
        "rules": [{"preset": "imds_404_updating", "endpoint": "imds", "times": 3}]
    })))
    .await;
    let imds = t.imds();
    assert_eq!(imds.user_data().await.unwrap(), b"eyJ2ZXJzaW9uIjoxfQ==");
    assert!(!imds.instance().await.unwrap().compute.vm_id.is_empty());
    assert!(imds.token(VAULT_RESOURCE, None).await.is_ok());
    assert_eq!(
        t.sim.requests().iter().filter(|r| r.status == 404).count(),
        3
    );
}

// Fault 5: "Identity not found" right after assignment: transient for a while, then fatal.
#[tokio::test]
async fn f05_identity_not_found_is_retried_for_a_bounded_time() {
    let t = TestSim::start(scenario(json!({
        "identities": {"system": true, "client_ids": ["1111-2222"]},
        "rules": [{"preset": "identity_not_found", "until_s": 1.0}]
    })))
    .await;
    let id = Identity::ClientId("1111-2222".into());
    assert!(t.imds().token(VAULT_RESOURCE, Some(&id)).await.is_ok());
    assert!(t
        .sim
        .requests()
        .iter()
        .any(|r| r.query.contains("client_id=1111-2222")));

    // An identity that never appears: fails after the grace, naming the identity.
    let t = TestSim::start(scenario(json!({"identities": {"system": true}}))).await;
    let imds = t.imds().with_identity_grace(Duration::from_millis(600));
    let msg = failed(
        imds.token(VAULT_RESOURCE, Some(&Identity::ClientId("9999".into())))
            .await,
    );
    assert!(
        msg.contains("client_id=9999") && msg.contains("Identity not found"),
        "{msg}"
    );
    assert!(
        t.statuses(TOKEN_PATH).len() >= 2,
        "it was not retried at all"
    );
}

// Faults 6 and 7 are refusals of malformed requests: the agent's requests are well formed,
// and a 400 of either kind fails at once instead of being retried.
#[tokio::test]
async fn f06_f07_bad_request_answers_fail_fast() {
    for body in [
        json!({"error": "bad_request_102", "error_description": "Required metadata header not specified"}),
        json!({"error": "Bad request. api-version is invalid or was not specified in the request.", "newest-versions": ["2025-04-07"]}),
    ] {
        let t = sim_with(json!([{"endpoint": "token", "status": 400, "body": body}])).await;
        let msg = failed(t.imds().token(VAULT_RESOURCE, None).await);
        assert!(msg.contains("HTTP 400"), "{msg}");
        assert_eq!(t.statuses(TOKEN_PATH).len(), 1, "a 400 was retried");
    }
}

/// One service's status lists: each fail-fast status is tried exactly once and fails
/// naming the status; each retry status (both ends of every range) is retried to success.
async fn assert_status_lists(
    service: &str,
    endpoint: &str,
    path: &str,
    error_body: serde_json::Value,
    fail_fast: &[u16],
    retry: &[std::ops::RangeInclusive<u16>],
    call: for<'a> fn(&'a TestSim) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>>,
) {
    for &status in fail_fast {
        let rule = json!([{"endpoint": endpoint, "status": status, "body": error_body}]);
        let t = sim_with(rule).await;
        let msg = failed(call(&t).await);
        assert!(msg.contains(&format!("HTTP {status}")), "{msg}");
        assert_eq!(t.statuses(path).len(), 1, "{service} {status} was retried");
    }
    for status in retry.iter().flat_map(|r| [*r.start(), *r.end()]) {
        let rule =
            json!([{"endpoint": endpoint, "status": status, "times": 1, "body": error_body}]);
        let t = sim_with(rule).await;
        call(&t)
            .await
            .unwrap_or_else(|e| panic!("{service} {status} not retried: {e:#}"));
        assert_eq!(t.statuses(path), vec![status, 200]);
    }
}

#[tokio::test]
async fn every_imds_fail_fast_status_is_tried_once_and_every_retry_status_is_retried() {
    assert_status_lists(
        "IMDS",
        "token",
        TOKEN_PATH,
        json!({"error": "x"}),
        IMDS_FAIL_FAST_STATUSES,
        IMDS_RETRY_STATUSES,
        |t| Box::pin(async move { t.imds().token(VAULT_RESOURCE, None).await.map(|_| ()) }),
    )
    .await;
}

// Fault 8 (userData contents) is a config concern: see cli_plan.rs. Here: userData's
// transport (empty answer) and the leaf API it uses.
#[tokio::test]
async fn f08_user_data_is_read_from_the_leaf_as_text() {
    let t = TestSim::start(scenario(json!({}))).await;
    assert_eq!(t.imds().user_data().await.unwrap(), b"");
    let r = t
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/userData"))
        .unwrap();
    assert!(
        r.query.contains("format=text") && r.query.contains("api-version=2021-01-01"),
        "{}",
        r.query
    );
}

// Fault 9: a hang, a slow trickle, a refused connection.
#[tokio::test]
async fn f09_hang_and_trickle_are_cut_by_the_attempt_timeout_then_retried() {
    let t = read_through(json!([{"preset": "hang", "endpoint": "token", "times": 1}])).await;
    assert_eq!(t.statuses(TOKEN_PATH), vec![0, 200]);

    let t = read_through(
        json!([{"preset": "trickle", "endpoint": "token", "times": 1, "trickle_ms": 200}]),
    )
    .await;
    assert_eq!(t.statuses(TOKEN_PATH).len(), 2);
}

#[tokio::test]
async fn f09_endless_hang_and_refused_connection_fail_within_the_deadline() {
    let short = RetryPolicy {
        deadline: Duration::from_secs(3),
        ..FAST
    };
    let t = sim_with(json!([{"preset": "hang", "endpoint": "token"}])).await;
    let started = std::time::Instant::now();
    let msg = failed(
        ImdsClient::new(&t.sim.imds_url(), short)
            .unwrap()
            .token(VAULT_RESOURCE, None)
            .await,
    );
    assert!(
        msg.contains("gave up after") && msg.contains("no complete answer within"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deadline was not kept"
    );

    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let msg = failed(
        ImdsClient::new(&format!("http://127.0.0.1:{port}"), short)
            .unwrap()
            .token(VAULT_RESOURCE, None)
            .await,
    );
    assert!(
        msg.contains("IMDS token request gave up") && msg.contains("no answer from IMDS"),
        "{msg}"
    );
}

// Fault 10: Key Vault's 401s: a token it did not issue.
#[tokio::test]
async fn f10_vault_401_invalid_issuer_fails_fast_naming_vault_and_secret() {
    let t = TestSim::start(scenario(json!({}))).await;
    let forged =
        AccessToken::from_imds_json(br#"{"access_token":"eyJforged","expires_on":"4102444800"}"#)
            .unwrap();
    let msg = failed(
        t.vault()
            .get_secret(VAULT, SECRET, &forged, RBAC_WINDOW)
            .await,
    );
    assert!(
        msg.contains("HTTP 401") && msg.contains(VAULT) && msg.contains(SECRET),
        "{msg}"
    );
    assert_eq!(t.statuses(SECRETS_PATH).len(), 1);

    let (msg, _) = read_fails_through(json!([{"preset": "kv_401_invalid_issuer"}])).await;
    assert!(
        msg.contains("AKV10032") || msg.contains("HTTP 401"),
        "{msg}"
    );
}

// Fault 11: 403 ForbiddenByRbac while the role assignment propagates; SecretDisabled.
#[tokio::test]
async fn f11_rbac_propagation_is_waited_out_but_not_forever() {
    let t = read_through(json!([{"preset": "kv_403_rbac", "until_s": 1.5}])).await;
    let s = t.statuses(SECRETS_PATH);
    assert!(s[0] == 403 && *s.last().unwrap() == 200, "{s:?}");

    let t = sim_with(json!([{"preset": "kv_403_rbac"}])).await;
    let token = t.imds().token(VAULT_RESOURCE, None).await.unwrap();
    let msg = failed(
        t.vault()
            .get_secret(VAULT, SECRET, &token, Duration::from_millis(700))
            .await,
    );
    assert!(
        msg.contains("ForbiddenByRbac")
            && msg.contains("still denied after")
            && msg.contains("Key Vault Secrets User"),
        "{msg}"
    );

    let (msg, t) = read_fails_through(json!([{"preset": "kv_403_disabled"}])).await;
    assert!(msg.contains("SecretDisabled"), "{msg}");
    assert_eq!(
        t.statuses(SECRETS_PATH).len(),
        1,
        "a disabled secret was retried"
    );
}

// Fault 12: 404 SecretNotFound fails fast; 429 Throttled without Retry-After is retried.
#[tokio::test]
async fn f12_missing_secret_fails_fast_and_throttling_is_retried() {
    let t = TestSim::start(scenario(json!({}))).await;
    let token = t.imds().token(VAULT_RESOURCE, None).await.unwrap();
    let msg = failed(
        t.vault()
            .get_secret(VAULT, "no-such-secret", &token, RBAC_WINDOW)
            .await,
    );
    assert!(
        msg.contains("HTTP 404") && msg.contains("\"no-such-secret\"") && msg.contains(VAULT),
        "{msg}"
    );
    assert_eq!(t.statuses(SECRETS_PATH).len(), 1);

    let t = read_through(json!([{"preset": "kv_429", "times": 3}])).await;
    assert_eq!(t.statuses(SECRETS_PATH), vec![429, 429, 429, 200]);
}

#[tokio::test]
async fn every_vault_fail_fast_status_is_tried_once_and_every_retry_status_is_retried() {
    assert_status_lists(
        "Key Vault",
        "secret",
        SECRETS_PATH,
        json!({"error": {"code": "X", "message": "m"}}),
        VAULT_FAIL_FAST_STATUSES,
        VAULT_RETRY_STATUSES,
        |t| {
            Box::pin(async move {
                anyhow::ensure!(read_secret(t).await? == JOIN_TOKEN, "wrong secret value");
                Ok(())
            })
        },
    )
    .await;
}

#[tokio::test]
async fn the_vault_is_reached_only_through_the_given_ca() {
    let t = TestSim::start(scenario(json!({}))).await;
    let token = t.imds().token(VAULT_RESOURCE, None).await.unwrap();
    // Without the simulator's CA the TLS handshake must fail: no silent "accept any cert".
    let no_ca = canarie_agent::azure::KeyVaultClient::new(
        Some(&t.sim.vault_url()),
        None,
        RetryPolicy {
            deadline: Duration::from_secs(2),
            ..FAST
        },
    )
    .unwrap();
    let msg = failed(no_ca.get_secret(VAULT, SECRET, &token, RBAC_WINDOW).await);
    assert!(msg.contains("no answer from Key Vault"), "{msg}");
    assert!(t.statuses(SECRETS_PATH).is_empty());
}
