//! HTTP plumbing shared by the IMDS and Key Vault clients: client construction, bounded
//! body reads, and turning a failed response into an [`AttemptError`].

use super::error::StatusError;
use super::retry::{status_in, AttemptError};
use anyhow::{Context, Result};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

/// An error body is quoted in logs up to this many bytes.
const BODY_EXCERPT: usize = 512;

/// The base URL of a link-local Azure endpoint (IMDS, the WireServer): plain http, since
/// neither has TLS. `what` names the endpoint in the error.
pub fn plain_http_url(base_url: &str, what: &str) -> Result<url::Url> {
    let base = url::Url::parse(base_url)
        .with_context(|| format!("{what} URL {base_url:?} is not a URL"))?;
    anyhow::ensure!(
        base.scheme() == "http",
        "{what} URL {base_url:?} must be plain http:// ({what} has no TLS)"
    );
    Ok(base)
}

/// A client for IMDS: never through a proxy (IMDS rejects proxied requests, and a proxy
/// would see the token), never following a redirect.
pub fn imds_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(2)
        .user_agent(concat!("canarie-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the IMDS HTTP client")
}

/// The system CA bundle, as the distributions ship it (`SSL_CERT_FILE` wins). One file
/// parsed once: scanning the hashed `/etc/ssl/certs` directory as well would more than
/// double the agent's own CPU time per boot for the same certificates.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn read_pem_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("parsing the CA file {} as PEM certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the CA file {} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

/// A client for Key Vault: HTTPS only, the system roots plus an optional extra CA bundle,
/// no redirects (a redirect would carry the bearer token elsewhere).
pub fn vault_client(extra_ca: Option<&Path>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("canarie-agent/", env!("CARGO_PKG_VERSION")));
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            SYSTEM_CA_BUNDLES
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.exists())
        });
    let mut roots = match &system {
        Some(path) => read_pem_certificates(path).context("loading the system CA bundle")?,
        None => Vec::new(),
    };
    if let Some(path) = extra_ca {
        roots.extend(read_pem_certificates(path)?);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "no CA certificates to trust Key Vault with: none of {} exists (install ca-certificates) and no --ca-file was given",
        SYSTEM_CA_BUNDLES.join(", ")
    );
    for cert in roots {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .context("building the Key Vault HTTPS client")
}

/// Reads a whole body, refusing one larger than `cap` bytes (a broken or hostile
/// endpoint must not make the agent allocate without bound).
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length() {
        anyhow::ensure!(
            len as usize <= cap,
            "response body of {len} bytes is over the {cap}-byte limit"
        );
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the response body")? {
        anyhow::ensure!(
            body.len() + chunk.len() <= cap,
            "response body is over the {cap}-byte limit"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error (connect, TLS, reset) is worth another attempt; a builder error is not.
pub fn transport_error(err: reqwest::Error, target: &str) -> AttemptError {
    let retryable = err.is_connect() || err.is_timeout() || err.is_request() || err.is_body();
    let error = anyhow::Error::new(err).context(format!("no answer from {target}"));
    if retryable {
        AttemptError::retry(error)
    } else {
        AttemptError::Fatal(error)
    }
}

/// `Retry-After` in seconds (the only form IMDS and Key Vault send), capped at 5 minutes.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

/// The start of an error body, for logs and error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
    let mut s: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .collect();
    if body.len() > BODY_EXCERPT {
        s.push('…');
    }
    s
}

/// A non-success status as a [`StatusError`], classified by the service's retry list.
pub fn status_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    retry_statuses: &[RangeInclusive<u16>],
    what: &str,
) -> AttemptError {
    let description = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error_description")?
                .as_str()
                .map(|d| excerpt(d.as_bytes()))
        });
    let error = anyhow::Error::new(StatusError {
        endpoint: what.to_string(),
        status: status.as_u16(),
        description,
        excerpt: excerpt(body),
    });
    if status_in(retry_statuses, status.as_u16()) {
        AttemptError::Retry {
            error,
            retry_after: retry_after(headers),
        }
    } else {
        AttemptError::Fatal(error)
    }
}
