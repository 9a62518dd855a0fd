//! The scenario file: what the simulated VM looks like, what the vault holds, and which
//! faults to inject. Every field has a default, so `{}` is a working scenario.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::rules::Rule;

/// Everything the simulator serves, as read from the `--scenario` JSON file.
///
/// Unknown fields are rejected so a typo in a scenario fails loudly instead of being ignored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Entra tenant named in the Key Vault challenge (`WWW-Authenticate`) and token issuer.
    pub tenant_id: String,
    pub subscription_id: String,
    /// `compute.vmId`.
    pub vm_id: String,
    /// `compute.name` (also `osProfile.computerName` unless `computer_name` is set).
    pub name: String,
    /// `compute.osProfile.adminUsername`.
    pub admin_username: String,
    /// `compute.osProfile.computerName`; defaults to `name`.
    pub computer_name: Option<String>,
    /// `compute.osProfile.disablePasswordAuthentication` (served as "true"/"false").
    pub disable_password_authentication: bool,
    /// `compute.publicKeys`: the SSH public keys Azure puts in the admin's authorized_keys.
    pub public_keys: Vec<PublicKey>,
    /// What the WireServer's goal state names (incarnation, container, role instance).
    pub wireserver: WireServerSpec,
    pub location: String,
    pub resource_group: String,
    pub vm_size: String,
    pub zone: String,
    /// First NIC's private IPv4 address in `network`.
    pub private_ip: String,
    /// VM tags, served as `compute.tags` ("k:v;k2:v2") and `compute.tagsList`.
    pub tags: BTreeMap<String, String>,
    pub identities: Identities,
    /// `compute.userData` exactly as given (normally base64; anything is served verbatim,
    /// so a scenario can serve user data that is not base64).
    pub user_data: Option<String>,
    /// Convenience: any JSON value, which the simulator serialises and base64-encodes into
    /// `compute.userData`. Mutually exclusive with `user_data`.
    pub user_data_json: Option<serde_json::Value>,
    /// Key Vault secrets by name.
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Throttle the vault like the real service (about 4,000 requests per 10 s per vault).
    pub vault_rate_limit: Option<RateLimit>,
    /// Scripted faults, first match wins. The clock for `from_s`/`until_s` starts at start-up.
    pub rules: Vec<Rule>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            tenant_id: "12345678-1234-1234-1234-123456789012".into(),
            subscription_id: "8d10da13-8125-4ba9-a717-bf7490507b3d".into(),
            vm_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
            name: "sim-vm-0".into(),
            admin_username: "azureuser".into(),
            computer_name: None,
            disable_password_authentication: true,
            public_keys: Vec::new(),
            wireserver: WireServerSpec::default(),
            location: "westeurope".into(),
            resource_group: "sim-rg".into(),
            vm_size: "Standard_D4s_v5".into(),
            zone: "1".into(),
            private_ip: "10.1.0.4".into(),
            tags: BTreeMap::new(),
            identities: Identities::default(),
            user_data: None,
            user_data_json: None,
            secrets: BTreeMap::new(),
            vault_rate_limit: None,
            rules: Vec::new(),
        }
    }
}

// Hand-written so secret values never reach a Debug print.
impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("tenant_id", &self.tenant_id)
            .field("vm_id", &self.vm_id)
            .field("name", &self.name)
            .field("admin_username", &self.admin_username)
            .field("computer_name", &self.computer_name)
            .field("public_keys", &self.public_keys.len())
            .field("wireserver", &self.wireserver)
            .field("identities", &self.identities)
            .field("user_data_set", &self.user_data.is_some())
            .field("user_data_json_set", &self.user_data_json.is_some())
            .field("secrets", &self.secrets)
            .field("vault_rate_limit", &self.vault_rate_limit)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Reads and checks a scenario file; errors name the file and the offending field.
    pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario file {}", path.display()))?;
        Scenario::from_json(&text)
            .with_context(|| format!("scenario file {} is not valid", path.display()))
    }

    /// Parses and checks a scenario from JSON text.
    pub fn from_json(text: &str) -> anyhow::Result<Scenario> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let scenario: Scenario = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("at `{}`: {}", e.path(), e.inner()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks what serde cannot: conflicting fields and rule consistency.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.user_data.is_some() && self.user_data_json.is_some() {
            bail!("set either `user_data` (base64 text) or `user_data_json` (an object), not both");
        }
        if self.admin_username.is_empty() {
            bail!("`admin_username` must not be empty (Azure always names an admin user)");
        }
        for (index, key) in self.public_keys.iter().enumerate() {
            if key.key_data.trim().is_empty() || !key.path.starts_with('/') {
                bail!("`public_keys[{index}]` needs a non-empty `key_data` and an absolute `path`");
            }
        }
        if let Some(limit) = &self.vault_rate_limit {
            limit
                .validate()
                .context("`vault_rate_limit` is not valid")?;
        }
        crate::rules::validate_rules(&self.rules).context("`rules` is not valid")?;
        Ok(())
    }

    /// `compute.osProfile.computerName`.
    pub fn computer_name(&self) -> &str {
        self.computer_name.as_deref().unwrap_or(&self.name)
    }

    /// The `compute.userData` value the scenario starts with.
    pub fn initial_user_data(&self) -> anyhow::Result<Option<String>> {
        match (&self.user_data, &self.user_data_json) {
            (Some(b64), None) => Ok(Some(b64.clone())),
            (None, Some(json)) => {
                let text =
                    serde_json::to_string(json).context("cannot serialise `user_data_json`")?;
                Ok(Some(base64::engine::general_purpose::STANDARD.encode(text)))
            }
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                bail!("set either `user_data` (base64 text) or `user_data_json` (an object), not both")
            }
        }
    }
}

/// Which managed identities the simulated VM has.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identities {
    /// System-assigned identity enabled (used when a token request names no identity).
    pub system: bool,
    /// User-assigned identities, addressable with `client_id=`, `object_id=` or `msi_res_id=`.
    /// Compared case-insensitively (GUIDs and ARM ids are case-insensitive in Azure).
    pub client_ids: Vec<String>,
    pub object_ids: Vec<String>,
    pub msi_res_ids: Vec<String>,
}

impl Default for Identities {
    fn default() -> Self {
        Identities {
            system: true,
            client_ids: Vec::new(),
            object_ids: Vec::new(),
            msi_res_ids: Vec::new(),
        }
    }
}

/// One Key Vault secret in the scenario.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub value: String,
    /// A disabled secret answers 403 `SecretDisabled`.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("value", &"<redacted>")
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// Vault throttle: at most `requests` per `window_s` seconds (fixed windows).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u64,
    pub window_s: f64,
}

impl RateLimit {
    fn validate(&self) -> anyhow::Result<()> {
        if self.requests == 0 {
            bail!("`requests` must be at least 1");
        }
        if !(self.window_s.is_finite() && self.window_s > 0.0) {
            bail!("`window_s` must be a positive number of seconds");
        }
        Ok(())
    }
}

/// One `compute.publicKeys` entry. Public keys are not secrets, so Debug shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    /// The OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    pub key_data: String,
    /// Where Azure asks the key to go; the portal's default is
    /// `/home/<admin>/.ssh/authorized_keys`.
    pub path: String,
}

/// The WireServer goal state's identifiers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WireServerSpec {
    /// `Incarnation` at start; the `wire_new_incarnation` preset and `POST
    /// /_sim/wireserver/incarnation` move it on.
    pub incarnation: u64,
    /// `Container/ContainerId` (a GUID on Azure).
    pub container_id: String,
    /// `RoleInstance/InstanceId` (`<deployment guid>.<role>_IN_0` on Azure).
    pub role_instance_id: String,
}

impl Default for WireServerSpec {
    fn default() -> Self {
        WireServerSpec {
            incarnation: 1,
            container_id: "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2".into(),
            role_instance_id: "b61f93d0-e1ed-40b2-b067-22c243233448.MachineRole_IN_0".into(),
        }
    }
}
