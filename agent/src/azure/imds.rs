//! The Azure Instance Metadata Service: managed-identity token, instance metadata and
//! userData, exactly as azure-protocol.md describes (Metadata header, pinned api-versions,
//! no proxy, no redirects, capped bodies, one retry policy). Each request first waits for a
//! route to IMDS ([`super::route`]): the unit does not wait for the whole network.

use super::error::StatusError;
use super::http::{self, read_capped, transport_error};
use super::retry::{retry, AttemptError, RetryPolicy, IMDS_RETRY_STATUSES};
use super::route;
use super::token::AccessToken;
use crate::config::Identity;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// api-version of the identity endpoint (the one every SDK pins).
pub const TOKEN_API_VERSION: &str = "2018-02-01";
/// api-version of the instance endpoint (has `compute.userData` and `tagsList`).
pub const INSTANCE_API_VERSION: &str = "2023-11-15";
/// api-version of the userData leaf (the first that has it).
pub const USER_DATA_API_VERSION: &str = "2021-01-01";
/// The Key Vault resource a token is requested for.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

/// A token answer is a few KiB; 64 KiB leaves room and bounds a broken endpoint.
const TOKEN_BODY_CAP: usize = 64 * 1024;
/// Instance metadata embeds userData (up to 64 KB, base64-encoded) and the network section.
const INSTANCE_BODY_CAP: usize = 512 * 1024;
/// userData is at most 64 KB before base64.
const USER_DATA_BODY_CAP: usize = 96 * 1024;

/// A 400 "Identity not found" right after an identity is assigned is transient: retried
/// for this long before it counts as a configuration error.
pub const IDENTITY_NOT_FOUND_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct ImdsClient {
    base: url::Url,
    http: reqwest::Client,
    policy: RetryPolicy,
    identity_grace: Duration,
    /// IMDS's address when the URL names one (it always does on Azure): the route to wait for.
    address: Option<SocketAddr>,
}

/// What the agent reads of `/metadata/instance`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct InstanceMetadata {
    pub compute: Compute,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Compute {
    #[serde(default)]
    pub vm_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub tags_list: Vec<Tag>,
    #[serde(default)]
    pub os_profile: OsProfile,
    #[serde(default)]
    pub public_keys: Vec<PublicKey>,
}

/// `compute.osProfile`: what platform provisioning sets up (IMDS sends every value as a
/// string, `disablePasswordAuthentication` too).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OsProfile {
    #[serde(default)]
    pub admin_username: String,
    #[serde(default)]
    pub computer_name: String,
    #[serde(default)]
    pub disable_password_authentication: String,
}

/// One `compute.publicKeys` entry: an SSH public key and the file Azure asks it to go in.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    pub key_data: String,
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

impl ImdsClient {
    pub fn new(base_url: &str, policy: RetryPolicy) -> Result<Self> {
        let base = http::plain_http_url(base_url, "IMDS")?;
        let ip = match base.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            // A name needs DNS first; its request reports what is missing.
            _ => None,
        };
        Ok(ImdsClient {
            address: ip.map(|ip| SocketAddr::new(ip, base.port_or_known_default().unwrap_or(80))),
            base,
            http: http::imds_client()?,
            policy,
            identity_grace: IDENTITY_NOT_FOUND_GRACE,
        })
    }

    /// Shortens the "Identity not found" grace (tests).
    pub fn with_identity_grace(mut self, grace: Duration) -> Self {
        self.identity_grace = grace;
        self
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url.query_pairs_mut().clear().extend_pairs(query);
        url
    }

    /// The retry loop, after waiting for a route to IMDS; the wait counts against the
    /// deadline, but leaves room for one whole attempt.
    async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let mut policy = self.policy;
        if let Some(addr) = self.address {
            let waited = route::wait(&format!("IMDS ({addr})"), addr, policy.deadline).await?;
            policy.deadline = policy
                .deadline
                .saturating_sub(waited)
                .max(policy.attempt_timeout);
        }
        retry(&policy, what, op).await
    }

    /// One GET with the Metadata header; returns the body of a 200, or the attempt's error.
    async fn get(&self, url: &url::Url, cap: usize, what: &str) -> Result<Vec<u8>, AttemptError> {
        let resp = self
            .http
            .get(url.clone())
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| transport_error(e, "IMDS"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_capped(resp, cap).await.map_err(AttemptError::retry)?;
        if status.is_success() {
            return Ok(body);
        }
        Err(http::status_error(
            status,
            &headers,
            &body,
            IMDS_RETRY_STATUSES,
            what,
        ))
    }

    /// A managed-identity access token for `resource` (system-assigned, or the given
    /// user-assigned identity).
    pub async fn token(&self, resource: &str, identity: Option<&Identity>) -> Result<AccessToken> {
        let mut query = vec![("api-version", TOKEN_API_VERSION), ("resource", resource)];
        if let Some(id) = identity {
            query.push(id.query_pair());
        }
        let url = self.url("/metadata/identity/oauth2/token", &query);
        let first_attempt = Instant::now();
        let body = self
            .retry("IMDS token request", || async {
                self.get(&url, TOKEN_BODY_CAP, "IMDS token endpoint")
                    .await
                    .map_err(|e| self.identity_not_found_is_transient(e, first_attempt))
            })
            .await
            .with_context(|| identity_hint(identity))?;
        AccessToken::from_imds_json(&body).context("IMDS returned an unusable token answer")
    }

    /// A 400 is fatal, except "Identity not found" within the grace period after the first attempt.
    fn identity_not_found_is_transient(
        &self,
        err: AttemptError,
        first_attempt: Instant,
    ) -> AttemptError {
        match err {
            AttemptError::Fatal(e)
                if StatusError::find(&e).is_some_and(StatusError::identity_not_found)
                    && first_attempt.elapsed() < self.identity_grace =>
            {
                AttemptError::retry(e)
            }
            other => other,
        }
    }

    /// Instance metadata (compute section).
    pub async fn instance(&self) -> Result<InstanceMetadata> {
        let url = self.url(
            "/metadata/instance",
            &[("api-version", INSTANCE_API_VERSION), ("extended", "true")],
        );
        let body = self
            .retry("IMDS instance metadata request", || async {
                self.get(&url, INSTANCE_BODY_CAP, "IMDS instance endpoint")
                    .await
            })
            .await?;
        serde_json::from_slice(&body).context("IMDS instance metadata is not the expected JSON")
    }

    /// The VM's userData, as the base64 text IMDS returns (empty when unset).
    pub async fn user_data(&self) -> Result<Vec<u8>> {
        let url = self.url(
            "/metadata/instance/compute/userData",
            &[("api-version", USER_DATA_API_VERSION), ("format", "text")],
        );
        self.retry("IMDS userData request", || async {
            self.get(&url, USER_DATA_BODY_CAP, "IMDS userData endpoint")
                .await
        })
        .await
    }
}

fn identity_hint(identity: Option<&Identity>) -> String {
    match identity {
        None => "getting a token for the VM's system-assigned managed identity (is the identity enabled on the VM?)".into(),
        Some(id) => {
            let (k, v) = id.query_pair();
            format!("getting a token for the user-assigned identity {k}={v} (is it assigned to this VM?)")
        }
    }
}
