//! The properties each fuzz target checks, one function per target. A function panics when
//! a property does not hold, which is what the fuzzer reports as a crash.
//!
//! This file is compiled twice: into the fuzz targets (fuzz/fuzz_targets/*.rs) and into the
//! normal test suite, where agent/tests/fuzz_corpus.rs replays every kept input under
//! fuzz/corpus/<target>/ through the same functions. It may use only what both have:
//! canarie-agent, serde_json and base64.

use base64::Engine as _;
use canarie_agent::azure::{keyvault, AccessToken, InstanceMetadata};
use canarie_agent::config;

/// A check: panics when a property does not hold for this input.
pub type Check = fn(&[u8]);

/// Every target by name: the fuzz binary, its folder under fuzz/corpus/, and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("config_parse", config_parse),
    ("user_data", user_data),
    ("imds_token", imds_token),
    ("instance_metadata", instance_metadata),
    ("keyvault_secret", keyvault_secret),
    ("keyvault_error", keyvault_error),
];

/// Put in place of a secret in a fuzzed document; must never come out again.
const MARKER: &str = "canarie-fuzz-marker-5f0c2e9a7b31";

/// Errors are printed as one line (README: "one clear line"); a line break from input
/// would split it, or forge a log line.
fn one_line(what: &str, text: &str) {
    assert!(
        !text.contains(['\n', '\r']),
        "{what} spans several lines: {text:?}"
    );
}

/// The node config parser: never panics; an accepted config survives a round trip with the
/// same digest; a refusal names a path and is one line.
pub fn config_parse(data: &[u8]) {
    match config::parse(data) {
        Ok(c) => {
            let json = serde_json::to_vec(&c).expect("a parsed config serializes");
            let again = config::parse(&json).expect("a parsed config, serialized, parses again");
            assert_eq!(again, c, "round trip changed the config");
            assert_eq!(config::digest(&again), config::digest(&c));
        }
        Err(e) => {
            assert!(!e.path.is_empty(), "error without a path: {e}");
            one_line("config error", &e.to_string());
        }
    }
}

/// userData decoding: never panics; accepting means the decoded bytes parse to the same
/// config; and any document, base64-encoded, is judged exactly as the document itself.
pub fn user_data(data: &[u8]) {
    match config::parse_user_data(data) {
        Ok(c) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data.trim_ascii())
                .expect("accepted userData is base64");
            assert_eq!(config::parse(&decoded), Ok(c));
        }
        Err(e) => one_line("userData error", &e.to_string()),
    }
    if !data.is_empty() && data.len() <= config::USER_DATA_MAX_BYTES {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        assert_eq!(
            config::parse_user_data(encoded.as_bytes()),
            config::parse(data),
            "base64 of a document is not judged as the document"
        );
    }
}

/// The string under `key` in a JSON object `data`, if it can be told apart from the rest of
/// the input: long enough not to occur by chance in an error message, and present exactly
/// once in the input (a copy elsewhere, say in `token_type`, may be shown legitimately).
fn identifiable_secret(data: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let secret = value.get(key)?.as_str()?.to_owned();
    (secret.len() >= 12 && text.matches(secret.as_str()).count() == 1).then_some(secret)
}

/// `data` with the string under `key` replaced by [`MARKER`], if `data` is a JSON object.
fn with_marker(data: &[u8], key: &str) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(data).ok()?;
    value.as_object_mut()?.insert(key.into(), MARKER.into());
    serde_json::to_vec(&value).ok()
}

/// Everything a caller could print of a parse result: `Debug` of the value, or the error's
/// one-line chain and its `Debug` (with backtrace-style causes).
fn rendered<T: std::fmt::Debug>(what: &str, result: anyhow::Result<T>) -> String {
    match result {
        Ok(v) => format!("{v:?}"),
        Err(e) => {
            let line = format!("{e:#}");
            one_line(what, &line);
            format!("{line}\n{e:?}")
        }
    }
}

/// A parser of a secret-bearing document must never render the secret, however the rest of
/// the document is broken: checked on the input as it is, and with a known marker put in.
fn never_renders_secret<T: std::fmt::Debug>(
    what: &str,
    data: &[u8],
    key: &str,
    parse: impl Fn(&[u8]) -> anyhow::Result<T>,
) {
    let out = rendered(what, parse(data));
    if let Some(secret) = identifiable_secret(data, key) {
        assert!(!out.contains(&secret), "{what} shows the secret: {out}");
    }
    if let Some(marked) = with_marker(data, key) {
        let out = rendered(what, parse(&marked));
        assert!(!out.contains(MARKER), "{what} shows the secret: {out}");
    }
}

/// The IMDS token answer: never panics, never shows `access_token`.
pub fn imds_token(data: &[u8]) {
    never_renders_secret("IMDS token answer", data, "access_token", |d| {
        AccessToken::from_imds_json(d)
    });
}

/// Instance metadata (what `ImdsClient::instance` deserializes): never panics; an error is
/// one line.
pub fn instance_metadata(data: &[u8]) {
    match serde_json::from_slice::<InstanceMetadata>(data) {
        Ok(m) => {
            let _ = format!("{m:?}");
        }
        Err(e) => one_line("instance metadata error", &e.to_string()),
    }
}

/// The Key Vault secret bundle: never panics, never shows `value`.
pub fn keyvault_secret(data: &[u8]) {
    never_renders_secret("Key Vault secret bundle", data, "value", |d| {
        keyvault::parse_secret_bundle(d)
    });
}

/// A Key Vault error body: never panics; what ends up in the refusal message (codes and the
/// message's first line) is one line each.
pub fn keyvault_error(data: &[u8]) {
    let (codes, message) = keyvault::parse_error_body(data);
    assert!(!codes.is_empty(), "no outer code, not even an empty one");
    one_line("Key Vault error message", &message);
    for code in &codes {
        one_line("Key Vault error code", code);
    }
}
