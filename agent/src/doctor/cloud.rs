//! Checks that talk to Azure: IMDS, the proxy environment, the node config (userData or its
//! fallbacks), the managed-identity token and the join token secret in Key Vault.

use super::{Options, Outcome, Secrets};
use crate::azure::{AccessToken, StatusError, VaultCause, VaultRefusal, VAULT_RESOURCE};
use crate::config::{self, ConfigSource, JoinTokenConfig};
use crate::paths::RKE2_TOKEN_DROPIN;
use crate::reconcile::inputs::{self, ConfigSources, LoadedConfig, NoConfig};
use crate::reconcile::state::NodeState;
use crate::rke2;
use secrecy::SecretString;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The address every Azure VM reaches IMDS at.
const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The proxy variables curl, az and the SDKs honour (doctor only says which are set).
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// The variables listing what is reached without a proxy.
pub const NO_PROXY_VARS: &[&str] = &["NO_PROXY", "no_proxy"];

/// How doctor names where the node config came from.
fn describe(source: &ConfigSource) -> String {
    match source {
        ConfigSource::LastConverged(path) => format!("the last converged copy {}", path.display()),
        other => other.to_string(),
    }
}

const IMDS_HINT: &str = "IMDS answers only inside an Azure VM, at 169.254.169.254, never through a proxy: check that no firewall rule (nftables/iptables) drops it and that it is routed (`ip route get 169.254.169.254`); try `curl -s --noproxy '*' -H Metadata:true 'http://169.254.169.254/metadata/instance?api-version=2021-02-01'`";

/// `imds`: IMDS answers the instance metadata request. The side result says whether it is
/// up, so the checks after it do not wait for a dead endpoint again.
pub(super) async fn imds(opts: &Options) -> (Outcome, bool) {
    let client = match opts.cx.imds(false) {
        Ok(c) => c,
        Err(e) => return (Outcome::fail(format!("{e:#}"), IMDS_HINT), false),
    };
    match client.instance().await {
        Ok(meta) => {
            let c = meta.compute;
            (
                Outcome::ok(format!(
                    "answers at {}: VM {} in {} (vmId {})",
                    client.base_url().as_str().trim_end_matches('/'),
                    c.name,
                    c.location,
                    c.vm_id
                )),
                true,
            )
        }
        Err(e) => (Outcome::fail(format!("{e:#}"), IMDS_HINT), false),
    }
}

/// `imds-proxy`: canarie-agent never sends IMDS requests through a proxy, but other tools in
/// this environment (curl, az, SDKs) would when a proxy variable is set and NO_PROXY does not
/// cover 169.254.169.254. Proxy values are never shown: they may hold credentials.
pub(super) fn proxy(env: impl Fn(&str) -> Option<String>) -> Outcome {
    let set: Vec<&str> = PROXY_VARS
        .iter()
        .copied()
        .filter(|k| env(k).is_some_and(|v| !v.trim().is_empty()))
        .collect();
    if set.is_empty() {
        return Outcome::ok("no proxy variable set; canarie-agent never proxies IMDS anyway");
    }
    let covered = NO_PROXY_VARS.iter().filter_map(|k| env(k)).any(|list| {
        list.split(',')
            .any(|entry| no_proxy_covers_imds(entry.trim()))
    });
    if covered {
        return Outcome::ok(format!(
            "{} set, and NO_PROXY covers 169.254.169.254",
            set.join(", ")
        ));
    }
    Outcome::warn(
        format!(
            "{} set, but NO_PROXY does not cover 169.254.169.254: canarie-agent ignores proxies for IMDS, but curl, az and SDKs run here would send IMDS requests to the proxy, which IMDS refuses",
            set.join(", ")
        ),
        "add 169.254.169.254 to NO_PROXY and no_proxy (e.g. in /etc/environment)",
    )
}

/// One NO_PROXY entry: `*`, the address itself, or a CIDR block holding it.
fn no_proxy_covers_imds(entry: &str) -> bool {
    if entry == "*" {
        return true;
    }
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => match p.parse::<u32>() {
            Ok(p) if p <= 32 => (a, p),
            _ => return false,
        },
        None => (entry, 32),
    };
    let Ok(addr) = addr.parse::<Ipv4Addr>() else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(addr) & mask == u32::from(IMDS_ADDR) & mask
}

/// `config`: the node config the agent would use, and from where: `--config FILE`, else IMDS
/// userData, else (IMDS down) the last converged copy. An invalid userData is never
/// replaced by the old copy, as in bootstrap.
pub(super) async fn config(
    opts: &Options,
    imds_up: bool,
    state: Option<&NodeState>,
) -> (Outcome, Option<LoadedConfig>) {
    let file = opts.cx.config_file.as_deref();
    let imds = if file.is_some() || imds_up {
        match opts.cx.imds(false) {
            Ok(c) => Some(c),
            Err(e) => return (Outcome::fail(format!("{e:#}"), IMDS_HINT), None),
        }
    } else {
        None
    };
    let loaded = inputs::load_config(ConfigSources {
        file,
        imds: imds.as_ref(),
        last_converged: Some(&opts.cx.root),
    })
    .await;
    // Why userData was not used, when it was not.
    let why = |imds_error: &Option<anyhow::Error>| match imds_error {
        Some(e) => format!("userData could not be read ({e:#})"),
        None => "IMDS is unreachable (see check imds)".to_string(),
    };
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            if let Some(none) = e.downcast_ref::<NoConfig>() {
                return (
                    Outcome::fail(
                        format!(
                            "no node config: {}, and this node has no last converged copy",
                            why(&none.imds_error)
                        ),
                        "make IMDS reachable (see check imds), or pass the config with --config FILE",
                    ),
                    None,
                );
            }
            let hint = match file {
                Some(path) => format!(
                    "fix the file (`canarie-agent config validate {}` names the field); docs/configuration.md lists every field",
                    path.display()
                ),
                None => "fix the VM's user_data (infra-tofu) and `systemctl restart canarie-agent`; check a file first with `canarie-agent config validate FILE`".into(),
            };
            return (Outcome::fail(format!("{e:#}"), hint), None);
        }
    };
    if matches!(loaded.source, ConfigSource::LastConverged(_)) {
        let finding = format!(
            "{}; using {}: {}",
            why(&loaded.imds_error),
            describe(&loaded.source),
            summary(&loaded.config)
        );
        return (
            Outcome::warn(
                finding,
                "the node can restart RKE2 from its local state, but changes to user_data are not seen until IMDS answers again",
            ),
            Some(loaded),
        );
    }
    let mut finding = format!(
        "valid, from {}: {}",
        describe(&loaded.source),
        summary(&loaded.config)
    );
    let digest = config::digest(&loaded.config);
    if let Some(converged) = state.and_then(|s| s.config_digest.as_deref()) {
        if converged != digest {
            finding.push_str("; differs from the config the node last converged with");
            return (
                Outcome::warn(
                    finding,
                    "`canarie-agent plan` shows what would change; `systemctl restart canarie-agent` applies it",
                ),
                Some(loaded),
            );
        }
        finding.push_str("; the node converged with it");
    }
    (Outcome::ok(finding), Some(loaded))
}

fn summary(config: &config::NodeConfig) -> String {
    format!(
        "role {}, node {}",
        config.role,
        config.node_name.as_deref().unwrap_or("(hostname)")
    )
}

fn identity_label(jt: &JoinTokenConfig) -> String {
    match &jt.identity {
        None => "the system-assigned identity".into(),
        Some(id) => {
            let (k, v) = id.query_pair();
            format!("the user-assigned identity {k}={v}")
        }
    }
}

/// `identity`: IMDS issues a managed-identity token for Key Vault. The token is never shown.
pub(super) async fn identity(
    opts: &Options,
    jt: &JoinTokenConfig,
    secrets: &Secrets,
) -> (Outcome, Option<AccessToken>) {
    // Doctor reports "Identity not found" at once instead of waiting out the grace period
    // bootstrap gives a newly assigned identity.
    let client = match opts.cx.imds(false) {
        Ok(c) => c.with_identity_grace(Duration::ZERO),
        Err(e) => return (Outcome::fail(format!("{e:#}"), IMDS_HINT), None),
    };
    match client.token(VAULT_RESOURCE, jt.identity.as_ref()).await {
        Ok(token) => {
            secrets.add(SecretString::from(
                token.bearer().trim_start_matches("Bearer ").to_string(),
            ));
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let minutes = token.expires_on.saturating_sub(now) / 60;
            (
                Outcome::ok(format!(
                    "token for Key Vault from {}, valid for {minutes} more minutes",
                    identity_label(jt)
                )),
                Some(token),
            )
        }
        Err(e) => {
            let text = format!("{e:#}");
            let hint = if StatusError::find(&e).is_some_and(StatusError::identity_not_found) {
                match &jt.identity {
                    None => "enable the VM's system-assigned identity (infra-tofu: identity { type = \"SystemAssigned\" }), or set join_token.identity to a user-assigned identity attached to the VM".to_string(),
                    Some(_) => "attach that user-assigned identity to the VM, or fix join_token.identity in the node config (client_id / object_id / msi_res_id)".to_string(),
                }
            } else {
                format!("IMDS could not issue a token for {}: try again in a minute; if it persists, check the VM's identity in the Azure portal (VM → Identity)", identity_label(jt))
            };
            (Outcome::fail(text, hint), None)
        }
    }
}

/// `key-vault`: the join token secret can be read with the identity's token. Its value is
/// never shown: only its length and version, and whether the node's token file holds it.
pub(super) async fn key_vault(
    opts: &Options,
    jt: &JoinTokenConfig,
    token: &AccessToken,
    state: Option<&NodeState>,
    secrets: &Secrets,
) -> (Outcome, ()) {
    let client = match opts.cx.vault(false) {
        Ok(c) => c,
        Err(e) => {
            return (
                Outcome::fail(format!("{e:#}"), "fix --vault-url / --ca-file"),
                (),
            )
        }
    };
    // No RBAC grace: doctor reports a missing role assignment now (bootstrap waits for it).
    let secret = match client
        .get_secret(&jt.vault, &jt.secret, token, Duration::ZERO)
        .await
    {
        Ok(secret) => secret,
        Err(e) => {
            let refusal = VaultRefusal::find(&e);
            return (
                Outcome::fail(
                    vault_finding(&e),
                    vault_hint(
                        refusal.map(|r| r.cause),
                        &jt.vault,
                        &jt.secret,
                        "join_token.secret",
                    ),
                ),
                (),
            );
        }
    };
    secrets.add(secret.value.clone());
    if secret.is_empty() {
        return (
            Outcome::fail(
                format!(
                    "secret {} in vault {} is empty (version {})",
                    jt.secret, jt.vault, secret.version
                ),
                "set the secret to the cluster's join token (infra-tofu stores a random_password there)",
            ),
            (),
        );
    }
    let mut finding = format!(
        "secret {} in vault {}: version {}, {} characters (value not shown)",
        jt.secret,
        jt.vault,
        secret.version,
        secret.len()
    );
    let recorded = state.and_then(|s| s.join_token_version.as_deref());
    if recorded.is_some_and(|v| v != secret.version) {
        finding.push_str(&format!(
            "; the node wrote version {}",
            recorded.unwrap_or_default()
        ));
        return (
            Outcome::warn(
                finding,
                "the token was rotated: the next canarie-agent run writes it and restarts RKE2 (`systemctl restart canarie-agent`)",
            ),
            (),
        );
    }
    if opts.as_root {
        let expected = rke2::render_token_dropin(&secret.value);
        let path = opts.cx.root.join(RKE2_TOKEN_DROPIN);
        let root = opts.cx.root.clone();
        let matches = super::blocking(move || {
            std::fs::read(root.join(RKE2_TOKEN_DROPIN))
                .ok()
                .map(|bytes| bytes == expected.expose_contents())
        })
        .await
        .ok()
        .flatten();
        match matches {
            Some(true) => finding.push_str("; the token file holds it"),
            Some(false) => {
                finding.push_str(&format!("; {} holds another value", path.display()));
                return (
                    Outcome::warn(
                        finding,
                        "`systemctl restart canarie-agent` rewrites the token file from Key Vault and restarts RKE2",
                    ),
                    (),
                );
            }
            None => {}
        }
    }
    (Outcome::ok(finding), ())
}

/// A refusal in one line: status, Azure's codes and message, without the client's own
/// advice (the hint gives doctor's). Anything else is the whole error chain.
fn vault_finding(error: &anyhow::Error) -> String {
    match VaultRefusal::find(error) {
        Some(r) => format!(
            "vault {} refused secret {}: {}",
            r.vault,
            r.secret,
            r.summary()
        ),
        None => format!("{error:#}"),
    }
}

/// What to do about a failed read of `secret` in `vault` (named by the config field
/// `entry`): by Key Vault's refusal, or, when it did not refuse, about the way to it.
pub(super) fn vault_hint(
    refusal: Option<VaultCause>,
    vault: &str,
    secret: &str,
    entry: &str,
) -> String {
    match refusal {
        Some(VaultCause::NoRole) => format!("grant the VM's managed identity the 'Key Vault Secrets User' role on vault {vault} (infra-tofu does; check with `az role assignment list --scope <vault id>`); a new assignment takes up to 10 minutes to apply"),
        Some(VaultCause::SecretDisabled) => format!("enable the secret: `az keyvault secret set-attributes --vault-name {vault} --name {secret} --enabled true`"),
        Some(VaultCause::Denied) => format!("vault {vault} denies the identity: grant it 'Key Vault Secrets User' (RBAC vaults) or an access policy with secret get"),
        Some(VaultCause::NotFound) => format!("create secret {secret} in vault {vault} (infra-tofu keyvault.tf stores it), or fix {entry} / join_token.vault in the node config"),
        Some(VaultCause::TokenRejected) => format!("vault {vault} did not accept the token: the vault must belong to the tenant of the VM's identity"),
        None => format!("check DNS and outbound HTTPS (443) to {vault}.vault.azure.net: NSG rules, a firewall, private-endpoint DNS"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn proxy_without_no_proxy_warns_and_never_shows_the_value() {
        let o = proxy(env(&[("HTTPS_PROXY", "http://user:pw@proxy:3128")]));
        assert_eq!(o.status, Status::Warn);
        assert!(o.finding.starts_with("HTTPS_PROXY set"), "{}", o.finding);
        assert!(!o.finding.contains("pw@proxy"));
        assert!(o.hint.unwrap().contains("NO_PROXY"));
    }

    #[test]
    fn no_proxy_entries_that_cover_imds() {
        let cases = [
            ("localhost,169.254.169.254", Status::Ok),
            ("*", Status::Ok),
            ("10.0.0.0/8, 169.254.0.0/16", Status::Ok),
            ("169.254.169.254/32", Status::Ok),
            ("localhost", Status::Warn),
            ("169.254.169.25", Status::Warn),
            ("10.0.0.0/8", Status::Warn),
            ("169.254.0.0/40", Status::Warn),
        ];
        for (list, expected) in cases {
            for (proxy_var, no_proxy_var) in
                [("http_proxy", "no_proxy"), ("HTTP_PROXY", "NO_PROXY")]
            {
                let o = proxy(env(&[(proxy_var, "http://p:3128"), (no_proxy_var, list)]));
                assert_eq!(o.status, expected, "{no_proxy_var}={list}");
            }
        }
        assert_eq!(proxy(env(&[("HTTP_PROXY", "  ")])).status, Status::Ok);
        assert_eq!(proxy(env(&[])).status, Status::Ok);
    }

    #[test]
    fn a_refusal_is_one_line_without_the_clients_advice() {
        let refusal = VaultRefusal {
            vault: "kv-x".into(),
            secret: "join".into(),
            status: 403,
            codes: vec!["Forbidden".into(), "ForbiddenByRbac".into()],
            message: "Caller is not authorized (really).".into(),
            cause: VaultCause::NoRole,
            advice: "still denied after 0s: grant it".into(),
        };
        let chain = anyhow::Error::new(refusal)
            .context("Key Vault read of secret \"join\" in vault \"kv-x\" failed");
        assert_eq!(
            vault_finding(&chain),
            "vault kv-x refused secret join: HTTP 403 Forbidden/ForbiddenByRbac (Caller is not authorized (really).)"
        );
        assert_eq!(vault_finding(&anyhow::anyhow!("timed out")), "timed out");
    }

    #[test]
    fn vault_hints_follow_the_azure_error_code() {
        let hint = |status: u16, codes: &[&str]| {
            vault_hint(
                VaultCause::of(status, codes),
                "kv-x",
                "join",
                "join_token.secret",
            )
        };
        assert!(hint(403, &["Forbidden", "ForbiddenByRbac"])
            .contains("'Key Vault Secrets User' role on vault kv-x"));
        assert!(hint(403, &["Forbidden", "SecretDisabled"]).contains("--enabled true"));
        assert!(hint(404, &["SecretNotFound"]).contains("create secret join"));
        assert!(hint(401, &["Unauthorized"]).contains("tenant"));
        // No refusal (connection refused): the way to the vault.
        assert!(
            vault_hint(None, "kv-x", "join", "join_token.secret").contains("kv-x.vault.azure.net")
        );
    }
}
