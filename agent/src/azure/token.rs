//! Secret-bearing values. Their `Debug` is redacted by `secrecy`, they have no `Display`,
//! and the only way to the bytes is an explicit `expose_secret()`.

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A managed-identity access token.
#[derive(Clone)]
pub struct AccessToken {
    token: SecretString,
    /// Unix seconds.
    pub expires_on: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// IMDS token answer: every field is a string, `expires_on` a digit string.
#[derive(Deserialize)]
struct ImdsTokenResponse {
    access_token: SecretString,
    expires_on: String,
    #[serde(default)]
    token_type: Option<String>,
}

impl AccessToken {
    pub fn from_imds_json(body: &[u8]) -> Result<Self> {
        // serde_json's error names the field and position, never the value.
        let r: ImdsTokenResponse =
            serde_json::from_slice(body).context("parsing the token JSON")?;
        anyhow::ensure!(
            !r.access_token.expose_secret().is_empty(),
            "access_token is empty"
        );
        if let Some(tt) = &r.token_type {
            anyhow::ensure!(
                tt.eq_ignore_ascii_case("bearer"),
                "token_type is {tt:?}, expected Bearer"
            );
        }
        let expires_on = r
            .expires_on
            .trim()
            .parse()
            .with_context(|| format!("expires_on {:?} is not unix seconds", r.expires_on))?;
        Ok(AccessToken {
            token: r.access_token,
            expires_on,
        })
    }

    /// The `Authorization` header value.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose_secret())
    }
}

/// A Key Vault secret's value and version.
#[derive(Clone)]
pub struct SecretValue {
    pub value: SecretString,
    /// The version id (the last segment of the secret's `id`).
    pub version: String,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("value", &"[REDACTED]")
            .field("version", &self.version)
            .finish()
    }
}

impl SecretValue {
    pub fn len(&self) -> usize {
        self.value.expose_secret().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJ0eXAi.sekret-token-value";

    #[test]
    fn parses_the_documented_answer_and_never_shows_the_token() {
        let body = format!(
            r#"{{"access_token":"{TOKEN}","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://vault.azure.net","token_type":"Bearer"}}"#
        );
        let t = AccessToken::from_imds_json(body.as_bytes()).unwrap();
        assert_eq!(t.expires_on, 1506484173);
        assert_eq!(t.bearer(), format!("Bearer {TOKEN}"));
        assert!(!format!("{t:?}").contains(TOKEN));
    }

    #[test]
    fn a_malformed_answer_errors_without_the_token() {
        for body in [
            format!(r#"{{"access_token":"{TOKEN}","expires_on":"soon"}}"#),
            format!(r#"{{"access_token":"{TOKEN}","expires_on":1506484173}}"#),
            format!(r#"{{"access_token":"{TOKEN}","expires_on":"1","token_type":"pop"}}"#),
            r#"{"access_token":"","expires_on":"1"}"#.to_string(),
        ] {
            let err = AccessToken::from_imds_json(body.as_bytes()).unwrap_err();
            assert!(!format!("{err:#}").contains(TOKEN), "{err:#}");
            assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
        }
    }

    #[test]
    fn secret_value_debug_is_redacted() {
        let s = SecretValue {
            value: SecretString::from("join-token-123"),
            version: "v1".into(),
        };
        assert!(!format!("{s:?}").contains("join-token-123"));
        assert_eq!(s.len(), 14);
    }
}
