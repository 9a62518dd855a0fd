//! Azure's error answers as types. Callers that explain a failure (doctor, the last-run
//! record) find them in an error chain with [`StatusError::find`] / [`VaultRefusal::find`]
//! and match on their fields, never on the text of a message. Their `Display` is the one
//! line the error chain shows.

/// An IMDS or Key Vault answer with an error status, other than a Key Vault refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint} answered HTTP {status}: {excerpt}")]
pub struct StatusError {
    /// Which endpoint answered ("IMDS token endpoint", `Key Vault "kv-canarie"`).
    pub endpoint: String,
    pub status: u16,
    /// The OAuth-style `error_description` of an IMDS error body, when it has one.
    pub description: Option<String>,
    /// The start of the body, for the message.
    pub excerpt: String,
}

impl StatusError {
    /// IMDS does not know (yet) the identity a token was asked for: 400 "Identity not found"
    /// (transient for a while after the identity is assigned).
    pub fn identity_not_found(&self) -> bool {
        self.status == 400
            && self
                .description
                .as_deref()
                .is_some_and(|d| d.contains("Identity not found"))
    }

    /// The status error in `err`'s chain, if there is one.
    pub fn find(err: &anyhow::Error) -> Option<&StatusError> {
        find(err)
    }
}

/// Why Key Vault refused a secret, from the status and Azure's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultCause {
    /// 403 `ForbiddenByRbac`: the identity has no role on the vault (or the assignment is
    /// still propagating).
    NoRole,
    /// 403 `SecretDisabled`.
    SecretDisabled,
    /// Any other 403: an access policy denies it.
    Denied,
    /// 404: no such secret.
    NotFound,
    /// 401: the vault did not accept the token (another tenant).
    TokenRejected,
}

impl VaultCause {
    /// The cause of an answer with `status` and `codes`; `None` when the status is not a
    /// refusal (a 5xx, a throttle).
    pub fn of<S: AsRef<str>>(status: u16, codes: &[S]) -> Option<VaultCause> {
        let has = |code: &str| codes.iter().any(|c| c.as_ref() == code);
        Some(match status {
            403 if has("ForbiddenByRbac") => VaultCause::NoRole,
            403 if has("SecretDisabled") => VaultCause::SecretDisabled,
            403 => VaultCause::Denied,
            404 => VaultCause::NotFound,
            401 => VaultCause::TokenRejected,
            _ => return None,
        })
    }
}

/// Key Vault refused to give out a secret (HTTP 401, 403 or 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Key Vault {vault:?} refused secret {secret:?}: {}: {advice}", self.summary())]
pub struct VaultRefusal {
    pub vault: String,
    pub secret: String,
    pub status: u16,
    /// Azure's error codes, outermost first (`["Forbidden", "ForbiddenByRbac"]`).
    pub codes: Vec<String>,
    /// The first line of Azure's message.
    pub message: String,
    pub cause: VaultCause,
    /// The client's advice (what it will do, what would help).
    pub advice: String,
}

impl VaultRefusal {
    /// Status, codes and Azure's message, without the advice:
    /// `HTTP 403 Forbidden/ForbiddenByRbac (Caller is not authorized…)`.
    pub fn summary(&self) -> String {
        format!(
            "HTTP {} {} ({})",
            self.status,
            self.codes.join("/"),
            self.message
        )
    }

    /// The refusal in `err`'s chain, if there is one.
    pub fn find(err: &anyhow::Error) -> Option<&VaultRefusal> {
        find(err)
    }
}

/// The error of type `T` anywhere in `err`'s chain: its root, or a layer wrapped by context.
fn find<T: std::error::Error + Send + Sync + 'static>(err: &anyhow::Error) -> Option<&T> {
    err.downcast_ref::<T>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<T>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn refusal(status: u16, codes: &[&str]) -> VaultRefusal {
        VaultRefusal {
            vault: "kv-x".into(),
            secret: "join".into(),
            status,
            codes: codes.iter().map(|c| c.to_string()).collect(),
            message: "Caller is not authorized (really).".into(),
            cause: VaultCause::of(status, codes).unwrap(),
            advice: "grant it".into(),
        }
    }

    #[test]
    fn causes_follow_status_and_code() {
        assert_eq!(
            VaultCause::of(403, &["Forbidden", "ForbiddenByRbac"]),
            Some(VaultCause::NoRole)
        );
        assert_eq!(
            VaultCause::of(403, &["Forbidden", "SecretDisabled"]),
            Some(VaultCause::SecretDisabled)
        );
        assert_eq!(
            VaultCause::of(403, &["Forbidden"]),
            Some(VaultCause::Denied)
        );
        assert_eq!(VaultCause::of(404, &[""; 0]), Some(VaultCause::NotFound));
        assert_eq!(
            VaultCause::of(401, &["Unauthorized"]),
            Some(VaultCause::TokenRejected)
        );
        assert_eq!(VaultCause::of(503, &["ServiceUnavailable"]), None);
    }

    #[test]
    fn a_refusal_reads_as_one_line_and_is_found_under_context() {
        let r = refusal(403, &["Forbidden", "ForbiddenByRbac"]);
        assert_eq!(
            r.to_string(),
            "Key Vault \"kv-x\" refused secret \"join\": HTTP 403 Forbidden/ForbiddenByRbac (Caller is not authorized (really).): grant it"
        );
        let err = Err::<(), _>(anyhow::Error::new(r.clone()))
            .context("Key Vault read failed")
            .context("reading the RKE2 join token")
            .unwrap_err();
        assert_eq!(VaultRefusal::find(&err), Some(&r));
        assert!(StatusError::find(&err).is_none());
    }

    #[test]
    fn identity_not_found_is_a_400_with_that_description() {
        let e = StatusError {
            endpoint: "IMDS token endpoint".into(),
            status: 400,
            description: Some("Identity not found".into()),
            excerpt: String::new(),
        };
        assert!(e.identity_not_found());
        let other = StatusError {
            description: Some("Required metadata header not specified".into()),
            ..e.clone()
        };
        assert!(!other.identity_not_found());
        let err = anyhow::Error::new(e.clone()).context("getting a token");
        assert_eq!(StatusError::find(&err), Some(&e));
    }
}
