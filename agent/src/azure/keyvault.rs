//! Key Vault GetSecret over HTTPS with the managed identity's token.

use super::error::{VaultCause, VaultRefusal};
use super::http::{self, read_capped, transport_error};
use super::retry::{retry, AttemptError, RetryPolicy, VAULT_RETRY_STATUSES};
use super::token::{AccessToken, SecretValue};
use anyhow::{Context, Result};
use secrecy::SecretString;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The Key Vault data-plane api-version the agent speaks.
pub const API_VERSION: &str = "2025-07-01";
/// A secret is at most 25 KB; the JSON around it is small.
const SECRET_BODY_CAP: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct KeyVaultClient {
    http: reqwest::Client,
    /// Replaces `https://{vault}.vault.azure.net` (tests, the simulator).
    base_override: Option<url::Url>,
    policy: RetryPolicy,
}

#[derive(Deserialize)]
struct SecretBundle {
    value: SecretString,
    #[serde(default)]
    id: String,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    innererror: Option<Box<ErrorDetail>>,
}

impl ErrorDetail {
    /// The innermost code names the real cause (`ForbiddenByRbac` inside `Forbidden`).
    fn codes(&self) -> Vec<&str> {
        let mut codes = vec![self.code.as_str()];
        let mut inner = self.innererror.as_deref();
        while let Some(e) = inner {
            codes.push(e.code.as_str());
            inner = e.innererror.as_deref();
        }
        codes
    }
}

/// Parses a GetSecret answer into the value and its version (the last segment of `id`).
/// Public for the fuzz targets (fuzz/); the client is the only other caller.
#[doc(hidden)]
pub fn parse_secret_bundle(body: &[u8]) -> Result<SecretValue> {
    // serde_json's errors name the field and position, never the value.
    let bundle: SecretBundle = serde_json::from_slice(body).context("parsing the secret JSON")?;
    let version = bundle
        .id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(SecretValue {
        value: bundle.value,
        version,
    })
}

/// Reads a Key Vault error body: its codes, outermost first (`["Forbidden",
/// "ForbiddenByRbac"]`), and the first line of its message, each capped and without control
/// characters, since they go into a one-line error. A body that is not a Key Vault error
/// gives one empty code and an empty message. Public for the fuzz targets (fuzz/).
#[doc(hidden)]
pub fn parse_error_body(body: &[u8]) -> (Vec<String>, String) {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .unwrap_or_default()
        .error;
    // A code with a line break in it was found by the keyvault_error fuzz target.
    let codes = detail
        .codes()
        .into_iter()
        .map(|c| http::excerpt(c.as_bytes()))
        .collect();
    let first_line = detail.message.lines().next().unwrap_or("").trim();
    (codes, http::excerpt(first_line.as_bytes()))
}

impl KeyVaultClient {
    pub fn new(
        base_override: Option<&str>,
        extra_ca: Option<&std::path::Path>,
        policy: RetryPolicy,
    ) -> Result<Self> {
        let base_override = base_override
            .map(|u| {
                url::Url::parse(u).with_context(|| format!("Key Vault URL {u:?} is not a URL"))
            })
            .transpose()?;
        if let Some(u) = &base_override {
            anyhow::ensure!(
                u.scheme() == "https",
                "Key Vault URL {u} must be https:// (Key Vault is HTTPS only)"
            );
        }
        Ok(KeyVaultClient {
            http: http::vault_client(extra_ca)?,
            base_override,
            policy,
        })
    }

    fn secret_url(&self, vault: &str, secret: &str) -> Result<url::Url> {
        let mut url = match &self.base_override {
            Some(u) => u.clone(),
            None => url::Url::parse(&format!("https://{vault}.vault.azure.net"))
                .with_context(|| format!("vault name {vault:?} does not make a URL"))?,
        };
        anyhow::ensure!(
            !url.cannot_be_a_base(),
            "Key Vault URL {url} cannot take a path"
        );
        url.path_segments_mut()
            .expect("checked above: the URL can be a base")
            .pop_if_empty()
            .extend(["secrets", secret]);
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    /// Reads the current version of `secret` from `vault`. A 403 `ForbiddenByRbac` (a role
    /// assignment still propagating) is retried for `rbac_window`; other refusals fail at once.
    pub async fn get_secret(
        &self,
        vault: &str,
        secret: &str,
        token: &AccessToken,
        rbac_window: Duration,
    ) -> Result<SecretValue> {
        let url = self.secret_url(vault, secret)?;
        let first_attempt = Instant::now();
        let what = format!("Key Vault read of secret {secret:?} in vault {vault:?}");
        let body = retry(&self.policy, &what, || async {
            self.get_once(&url, token, vault, secret, first_attempt, rbac_window)
                .await
        })
        .await?;
        parse_secret_bundle(&body).with_context(|| {
            format!("Key Vault's answer for secret {secret:?} in vault {vault:?} is not a secret bundle")
        })
    }

    async fn get_once(
        &self,
        url: &url::Url,
        token: &AccessToken,
        vault: &str,
        secret: &str,
        first_attempt: Instant,
        rbac_window: Duration,
    ) -> Result<Vec<u8>, AttemptError> {
        // Marked sensitive: a Debug of the request or its headers shows no token.
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&token.bearer()).map_err(|_| {
                AttemptError::Fatal(anyhow::anyhow!(
                    "the managed-identity token is not a valid HTTP header value"
                ))
            })?;
        authorization.set_sensitive(true);
        let resp = self
            .http
            .get(url.clone())
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| transport_error(e, &format!("Key Vault {vault:?}")))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_capped(resp, SECRET_BODY_CAP)
            .await
            .map_err(AttemptError::retry)?;
        if status.is_success() {
            return Ok(body);
        }
        let (codes, message) = parse_error_body(&body);
        let Some(cause) = VaultCause::of(status.as_u16(), &codes) else {
            return Err(http::status_error(
                status,
                &headers,
                &body,
                VAULT_RETRY_STATUSES,
                &format!("Key Vault {vault:?}"),
            ));
        };
        let refusal = |advice: String| {
            anyhow::Error::new(VaultRefusal {
                vault: vault.to_string(),
                secret: secret.to_string(),
                status: status.as_u16(),
                codes: codes.iter().filter(|c| !c.is_empty()).cloned().collect(),
                message: message.clone(),
                cause,
                advice,
            })
        };
        Err(match cause {
            VaultCause::NoRole if first_attempt.elapsed() < rbac_window => {
                AttemptError::retry(refusal("the role assignment may still be propagating".into()))
            }
            VaultCause::NoRole => AttemptError::Fatal(refusal(format!(
                "still denied after {}s: grant the VM's identity 'Key Vault Secrets User' on the vault",
                rbac_window.as_secs()
            ))),
            VaultCause::SecretDisabled => AttemptError::Fatal(refusal(
                "the secret is disabled: enable it (az keyvault secret set-attributes --enabled true)".into(),
            )),
            VaultCause::Denied => AttemptError::Fatal(refusal(
                "grant the VM's identity 'Key Vault Secrets User' (or an access policy with get) on the vault".into(),
            )),
            VaultCause::NotFound => AttemptError::Fatal(refusal(
                "create the secret, or fix the vault or secret name in the node config".into(),
            )),
            VaultCause::TokenRejected => AttemptError::Fatal(refusal(
                "the token was not accepted: check the vault's tenant and the identity".into(),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_url_uses_the_vault_name_or_the_override() {
        let kv = KeyVaultClient::new(None, None, RetryPolicy::VAULT).unwrap();
        assert_eq!(
            kv.secret_url("kv-canarie", "rke2-join-token")
                .unwrap()
                .as_str(),
            "https://kv-canarie.vault.azure.net/secrets/rke2-join-token?api-version=2025-07-01"
        );
        let kv =
            KeyVaultClient::new(Some("https://127.0.0.1:8443/"), None, RetryPolicy::VAULT).unwrap();
        assert_eq!(
            kv.secret_url("kv-canarie", "t").unwrap().as_str(),
            "https://127.0.0.1:8443/secrets/t?api-version=2025-07-01"
        );
    }

    #[test]
    fn plain_http_override_is_refused() {
        let err =
            KeyVaultClient::new(Some("http://127.0.0.1:80"), None, RetryPolicy::VAULT).unwrap_err();
        assert!(err.to_string().contains("must be https://"));
    }

    #[test]
    fn a_bundle_gives_the_value_and_the_version_of_its_id() {
        use secrecy::ExposeSecret;
        let s = parse_secret_bundle(
            br#"{"value":"K10-x","id":"https://kv.vault.azure.net/secrets/t/0a1b2c/","attributes":{}}"#,
        )
        .unwrap();
        assert_eq!(s.value.expose_secret(), "K10-x");
        assert_eq!(s.version, "0a1b2c");
        let (codes, message) = parse_error_body(b"<html>502</html>");
        assert_eq!((codes, message), (vec![String::new()], String::new()));
    }

    #[test]
    fn inner_error_codes_are_all_seen() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../reference/azure-specs/keyvault/observed/403-forbidden-by-rbac.json"
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let e: ErrorBody = serde_json::from_value(v["body"].clone()).unwrap();
        assert_eq!(e.error.codes(), vec!["Forbidden", "ForbiddenByRbac"]);
    }
}
