//! IMDS real behaviour: protocol checks, token, instance document, userData.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{answer, client, imds, reference, start, token, TOKEN_QUERY};

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// Same object keys at every level (arrays: compared element by element up to the shorter).
fn assert_same_shape(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            assert_eq!(keys(actual), keys(expected), "keys differ at {at}");
            for (key, value) in e {
                assert_same_shape(&a[key], value, &format!("{at}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                assert_same_shape(a, e, &format!("{at}[{i}]"));
            }
        }
        (a, e) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(e),
            "type differs at {at}: {a} vs {e}"
        ),
    }
}

#[tokio::test]
async fn missing_metadata_header_gives_the_documented_400s() {
    let sim = start(json!({})).await;
    let errors = reference("imds/docs-derived/token-error-responses.json");
    let http = client(&sim);

    let token = answer(http.get(format!("{}{TOKEN_QUERY}", sim.imds_url()))).await;
    assert_eq!(token.status, 400);
    assert_eq!(token.json(), errors["missing_metadata_header"]["body"]);

    let url = format!(
        "{}/metadata/instance?api-version=2023-11-15",
        sim.imds_url()
    );
    let instance = answer(http.get(&url)).await;
    assert_eq!(instance.status, 400);
    assert_eq!(
        instance.json(),
        errors["instance_endpoint_missing_metadata_header"]["body"]
    );
    // `Metadata: false` is as good as missing.
    let wrong = answer(http.get(&url).header("Metadata", "false")).await;
    assert_eq!(wrong.status, 400);

    let records = sim.requests();
    assert_eq!(records.len(), 3);
    assert!(records
        .iter()
        .all(|r| !r.has_metadata_header && r.status == 400));
    assert_eq!(records[0].error.as_deref(), Some("bad_request_102"));
}

#[tokio::test]
async fn missing_or_unknown_api_version_lists_the_newest_versions() {
    let sim = start(json!({})).await;
    let expected = reference("imds/docs-derived/error-400-missing-api-version.json");
    for path in [
        "/metadata/instance",
        "/metadata/instance?api-version=2099-01-01",
        "/metadata/identity/oauth2/token?resource=https://vault.azure.net",
        "/metadata/instance/compute/userData?format=text&api-version=latest",
    ] {
        let answer = imds(&sim, path).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.json(), expected, "{path}");
    }
    for version in ["2017-03-01", "2021-01-01", "2023-11-15", "2025-04-07"] {
        let answer = imds(&sim, &format!("/metadata/instance?api-version={version}")).await;
        assert_eq!(answer.status, 200, "{version} is a known version");
    }
}

#[tokio::test]
async fn repeated_query_parameter_forwarded_for_and_non_get_are_rejected() {
    let sim = start(json!({})).await;
    let repeated = imds(
        &sim,
        "/metadata/instance?api-version=2023-11-15&api-version=2023-11-15",
    )
    .await;
    assert_eq!(repeated.status, 400);
    assert!(repeated.text.contains("api-version"), "{}", repeated.text);

    let http = client(&sim);
    let url = format!(
        "{}/metadata/instance?api-version=2023-11-15",
        sim.imds_url()
    );
    let proxied = answer(
        http.get(&url)
            .header("Metadata", "true")
            .header("X-Forwarded-For", "10.0.0.1"),
    )
    .await;
    assert_eq!(proxied.status, 400);
    assert!(sim.requests().last().unwrap().has_forwarded_for);

    let post = answer(http.post(&url).header("Metadata", "true")).await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn token_has_the_documented_all_string_shape_and_is_fresh_each_time() {
    let sim = start(json!({})).await;
    let expected = reference("imds/docs-derived/token-response-200.json");
    let first = imds(&sim, TOKEN_QUERY).await;
    assert_eq!(first.status, 200);
    assert!(first
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = first.json();
    assert_eq!(keys(&body), keys(&expected));
    for (key, value) in body.as_object().unwrap() {
        assert!(value.is_string(), "{key} must be a string, got {value}");
    }
    assert_eq!(body["resource"], "https://vault.azure.net");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["refresh_token"], "");
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let not_before: u64 = body["not_before"].as_str().unwrap().parse().unwrap();
    assert!(expires_on > not_before);

    let second = token(&sim).await;
    assert_ne!(body["access_token"].as_str().unwrap(), second);
    // The request log holds the query but never the token.
    let log = serde_json::to_string(&sim.requests()).unwrap();
    assert!(!log.contains(&second));
}

#[tokio::test]
async fn token_without_resource_is_a_400() {
    let sim = start(json!({})).await;
    let answer = imds(
        &sim,
        "/metadata/identity/oauth2/token?api-version=2018-02-01",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"], "invalid_request");
}

#[tokio::test]
async fn user_assigned_identities_must_be_known() {
    let sim = start(json!({
        "identities": {
            "system": false,
            "client_ids": ["11111111-2222-3333-4444-555555555555"],
            "msi_res_ids": ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/node"]
        }
    }))
    .await;
    let not_found = reference("imds/docs-derived/token-error-responses.json")["identity_not_found"]
        ["body"]
        .clone();
    let known = imds(
        &sim,
        &format!("{TOKEN_QUERY}&client_id=11111111-2222-3333-4444-555555555555"),
    )
    .await;
    assert_eq!(known.status, 200);
    // ARM ids compare case-insensitively, as in Azure.
    let by_resource_id = imds(
        &sim,
        &format!("{TOKEN_QUERY}&msi_res_id=/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NODE"),
    )
    .await;
    assert_eq!(by_resource_id.status, 200);
    let unknown = imds(
        &sim,
        &format!("{TOKEN_QUERY}&client_id=99999999-2222-3333-4444-555555555555"),
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json(), not_found);
    let two = imds(
        &sim,
        &format!("{TOKEN_QUERY}&client_id=11111111-2222-3333-4444-555555555555&object_id=x"),
    )
    .await;
    assert_eq!(two.status, 400);
    // No id, no system identity, one user-assigned identity: IMDS uses that one.
    assert_eq!(imds(&sim, TOKEN_QUERY).await.status, 200);

    let bare = start(json!({"identities": {"system": false}})).await;
    let none = imds(&bare, TOKEN_QUERY).await;
    assert_eq!(none.status, 400);
    assert_eq!(none.json(), not_found);
}

#[tokio::test]
async fn instance_document_has_compute_and_network() {
    let sim = start(json!({
        "vm_id": "aaaaaaaa-0000-0000-0000-000000000001",
        "name": "node-1",
        "location": "northeurope",
        "tags": {"Department": "IT", "ReferenceNumber": "123456", "TestStatus": "Pending"},
        "user_data_json": {"role": "server"}
    }))
    .await;
    let answer = imds(
        &sim,
        "/metadata/instance?api-version=2023-11-15&extended=true",
    )
    .await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    let compute = &doc["compute"];
    assert_eq!(compute["vmId"], "aaaaaaaa-0000-0000-0000-000000000001");
    assert_eq!(compute["name"], "node-1");
    assert_eq!(compute["location"], "northeurope");
    assert_eq!(
        compute["tagsList"],
        reference("imds/docs-derived/compute-tagsList.json")
    );
    assert_eq!(
        compute["tags"],
        "Department:IT;ReferenceNumber:123456;TestStatus:Pending"
    );
    let user_data = base64::engine::general_purpose::STANDARD
        .decode(compute["userData"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&user_data).unwrap(),
        json!({"role": "server"})
    );
    // No invented compute fields: each one exists in the spec's example.
    let example = reference("imds/2021-11-15/examples/GetInstanceMetadata.json");
    let example_keys = keys(&example["responses"]["200"]["body"]["compute"]);
    let extra: Vec<String> = keys(compute).difference(&example_keys).cloned().collect();
    assert!(
        extra.is_empty(),
        "compute fields not in the example: {extra:?}"
    );
    assert_same_shape(
        &doc["network"],
        &reference("imds/docs-derived/instance-network.json"),
        "network",
    );
}

#[tokio::test]
async fn user_data_leaf_needs_format_text_and_follows_live_changes() {
    let sim = start(json!({})).await;
    let path = "/metadata/instance/compute/userData?api-version=2021-01-01";
    let unset = imds(&sim, &format!("{path}&format=text")).await;
    assert_eq!((unset.status, unset.text.as_str()), (200, ""));
    assert_eq!(imds(&sim, path).await.status, 400);

    sim.set_user_data(Some("eyJhIjoxfQ==".into()));
    let set = imds(&sim, &format!("{path}&format=text")).await;
    assert_eq!((set.status, set.text.as_str()), (200, "eyJhIjoxfQ=="));
    assert!(set
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let whole = imds(&sim, "/metadata/instance/compute?api-version=2021-01-01").await;
    assert_eq!(whole.json()["userData"], "eyJhIjoxfQ==");

    sim.set_user_data(None);
    assert_eq!(imds(&sim, &format!("{path}&format=text")).await.text, "");
    assert_eq!(
        imds(&sim, "/metadata/instance/nothing?api-version=2021-01-01")
            .await
            .status,
        404
    );
}
