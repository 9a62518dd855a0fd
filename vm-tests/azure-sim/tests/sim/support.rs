//! Helpers shared by the simulator tests.

use std::time::Duration;

use azure_sim::{Rule, Scenario, Sim, SimOptions};
use serde_json::Value;

/// Reference data, read in place from the repository's reference/ folder.
pub fn reference(relative: &str) -> Value {
    let path = format!(
        "{}/../../reference/azure-specs/{relative}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

pub fn scenario(json: Value) -> Scenario {
    Scenario::from_json(&json.to_string()).expect("test scenario is valid")
}

pub async fn start(json: Value) -> Sim {
    Sim::start(SimOptions {
        scenario: scenario(json),
        ..SimOptions::default()
    })
    .await
    .expect("simulator starts")
}

pub fn rules(json: Value) -> Vec<Rule> {
    serde_json::from_value(json).expect("test rules parse")
}

/// A client that trusts only the simulator's CA and never uses a proxy.
pub fn client(sim: &Sim) -> reqwest::Client {
    client_trusting(sim.ca_pem().as_bytes())
}

/// A client that trusts only the CA certificate `ca_pem` and never uses a proxy.
pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

pub async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request is answered");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body arrives"),
    }
}

pub const TOKEN_QUERY: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";

/// A running simulator as a client sees it: its two base URLs, and a client that trusts
/// only its CA. For one in this process ([`Endpoints::of`]) or the binary's ready file.
pub struct Endpoints {
    pub http: reqwest::Client,
    pub imds_url: String,
    pub vault_url: String,
}

impl Endpoints {
    pub fn of(sim: &Sim) -> Endpoints {
        Endpoints {
            http: client(sim),
            imds_url: sim.imds_url(),
            vault_url: sim.vault_url(),
        }
    }

    /// GET on IMDS with `Metadata: true`.
    pub async fn imds(&self, path_and_query: &str) -> Answer {
        let url = format!("{}{path_and_query}", self.imds_url);
        answer(self.http.get(url).header("Metadata", "true")).await
    }

    /// A vault token from IMDS.
    pub async fn token(&self) -> String {
        let answer = self.imds(TOKEN_QUERY).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.json()["access_token"].as_str().unwrap().to_string()
    }

    /// GET on the vault, with a bearer token if given.
    pub async fn vault(&self, path_and_query: &str, token: Option<&str>) -> Answer {
        let url = format!("{}{path_and_query}", self.vault_url);
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request).await
    }
}

/// [`Endpoints::imds`] on `sim`.
pub async fn imds(sim: &Sim, path_and_query: &str) -> Answer {
    Endpoints::of(sim).imds(path_and_query).await
}

/// [`Endpoints::token`] on `sim`.
pub async fn token(sim: &Sim) -> String {
    Endpoints::of(sim).token().await
}

/// [`Endpoints::vault`] on `sim`.
pub async fn vault(sim: &Sim, path_and_query: &str, token: Option<&str>) -> Answer {
    Endpoints::of(sim).vault(path_and_query, token).await
}
