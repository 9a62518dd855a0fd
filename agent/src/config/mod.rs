//! Node config: parsing with JSON-path errors, semantic validation, userData decoding and
//! the JSON Schema. Knows nothing of HTTP, disks or RKE2.

mod node_labels;
mod types;
mod validate;

pub use node_labels::LONGHORN_DEFAULT_DISK_LABEL;
pub use types::*;

use base64::Engine as _;

/// IMDS caps userData at 64 KB; anything larger did not come from Azure.
pub const USER_DATA_MAX_BYTES: usize = 64 * 1024;

/// What is wrong with a config, at which JSON path (`.` is the document root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: escape_controls(path.into()),
            message: escape_controls(message.into()),
        }
    }
}

/// Errors echo input (an unknown field's name, a device path), which may hold line breaks
/// or other control characters; escaped, the error stays one line and cannot forge a log
/// line. (Found by the config_parse fuzz target.)
fn escape_controls(s: String) -> String {
    if !s.contains(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Where a node config came from, for logs and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum ConfigSource {
    File(std::path::PathBuf),
    Stdin,
    ImdsUserData,
    /// The copy the node saved when it last converged (this file), used when IMDS does not
    /// answer.
    LastConverged(std::path::PathBuf),
}

impl ConfigSource {
    /// A stable id (doctor's JSON report: `node.config_source`).
    pub fn id(&self) -> &'static str {
        match self {
            ConfigSource::File(_) => "file",
            ConfigSource::Stdin => "stdin",
            ConfigSource::ImdsUserData => "imds_user_data",
            ConfigSource::LastConverged(_) => "last_converged",
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) | ConfigSource::LastConverged(p) => {
                write!(f, "file {}", p.display())
            }
            ConfigSource::Stdin => f.write_str("standard input"),
            ConfigSource::ImdsUserData => f.write_str("IMDS userData"),
        }
    }
}

/// Parses and validates a node config document.
pub fn parse(json: &[u8]) -> Result<NodeConfig, ConfigError> {
    // Syntax first, so a broken document is reported as such rather than at a guessed path.
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| ConfigError::new(".", format!("is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ConfigError::new(
            ".",
            "is not a JSON object: the node config is an object with \"version\": 1",
        ));
    }
    let config: NodeConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(
            if path.is_empty() { ".".into() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    validate::validate(&config)?;
    Ok(config)
}

/// Decodes IMDS userData (base64 text) into a validated config.
pub fn parse_user_data(base64_text: &[u8]) -> Result<NodeConfig, ConfigError> {
    let trimmed = base64_text.trim_ascii();
    if trimmed.is_empty() {
        return Err(ConfigError::new(
            "userData",
            "is empty: set the VM's user_data to the node config JSON (infra-tofu does this)",
        ));
    }
    if trimmed.len() > USER_DATA_MAX_BYTES * 4 / 3 + 4 {
        return Err(ConfigError::new(
            "userData",
            format!("is larger than IMDS's {USER_DATA_MAX_BYTES}-byte limit"),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .map_err(|e| {
            ConfigError::new(
                "userData",
                format!("is not base64 ({e}): user_data must be base64 of the node config JSON"),
            )
        })?;
    if decoded.len() > USER_DATA_MAX_BYTES {
        return Err(ConfigError::new(
            "userData",
            format!("decodes to more than IMDS's {USER_DATA_MAX_BYTES}-byte limit"),
        ));
    }
    parse(&decoded)
}

/// The JSON Schema (draft 2020-12) of the node config.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(NodeConfig)).expect("schema serializes")
}

/// A stable digest of a config, recorded in the node state.
pub fn digest(config: &NodeConfig) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(config).expect("config serializes");
    hex::encode(Sha256::digest(canonical))
}

#[cfg(test)]
mod tests;

/// examples/server-with-secrets.json: a server with every cluster secret, the fixture the
/// unit tests of the config and of the Secret manifests share.
#[cfg(test)]
pub(crate) const EXAMPLE_SERVER_WITH_SECRETS: &str =
    include_str!("../../../examples/server-with-secrets.json");
