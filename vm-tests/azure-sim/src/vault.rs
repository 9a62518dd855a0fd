//! The simulated Key Vault data plane (GetSecret only), with the real service's checks:
//! api-version, the bearer challenge, the token's issuer and audience, throttling.

use serde_json::json;

use crate::reply::{self, Reply};
use crate::rules::{Endpoint, MatchCtx, Plan, Service};
use crate::server::RequestInfo;
use crate::state::State;

/// `/secrets/{name}[/{version}][/]` → (name, version).
fn secret_route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/secrets/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = rest.split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let version = parts.next();
    if parts.next().is_some() || version == Some("") {
        return None;
    }
    Some((name, version))
}

/// Key Vault api-versions are dates (the SDKs send 2025-07-01 and 2026-04-01 today) or the
/// older `7.x` numbers, optionally with a `-preview` suffix; any well-formed one is accepted.
fn valid_api_version(version: &str) -> bool {
    let numbered = |v: &str| {
        v.split_once('.').is_some_and(|(major, minor)| {
            [major, minor]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
    };
    if numbered(version.strip_suffix("-preview").unwrap_or(version)) {
        return true;
    }
    let (date, suffix) = match version.split_once("-preview") {
        Some((date, suffix)) => (date, Some(suffix)),
        None => (version, None),
    };
    let date_ok = date.len() == 10
        && date.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    let suffix_ok = match suffix {
        None | Some("") => true,
        Some(s) => s
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())),
    };
    date_ok && suffix_ok
}

fn is_vault_resource(resource: &str) -> bool {
    resource
        .trim_end_matches('/')
        .eq_ignore_ascii_case("https://vault.azure.net")
}

pub(crate) fn handle(state: &State, req: &RequestInfo) -> Plan {
    let scenario = &state.scenario;
    if req.method != "GET" {
        return Plan::plain(reply::kv_method_not_allowed(&req.method));
    }
    let api_version = url::form_urlencoded::parse(req.query.as_bytes())
        .find(|(key, _)| key == "api-version")
        .map(|(_, value)| value.into_owned());
    match api_version {
        Some(version) if valid_api_version(&version) => {}
        Some(version) => {
            return Plan::plain(reply::kv_bad_parameter(&format!(
                "The specified version ({version}) is not recognized. Use a dated api-version such as 2025-07-01."
            )))
        }
        None => {
            return Plan::plain(reply::kv_bad_parameter(
                "The request URI contains an invalid or missing 'api-version' parameter.",
            ))
        }
    }
    // The challenge is the real service's first answer to every SDK; rules only see
    // requests that carry a token, so a `times` count is not used up by the probe.
    let Some(token) = req.bearer.as_deref() else {
        return Plan::plain(reply::kv_challenge(&scenario.tenant_id, &scenario.location));
    };
    let route = secret_route(&req.path);
    let secret_id = route.map(|(name, version)| match version {
        Some(version) => format!("{name}/{version}"),
        None => name.to_string(),
    });
    let ctx = MatchCtx {
        service: Service::Vault,
        endpoint: route.map(|_| Endpoint::Secret),
        secret_name: route.map(|(name, _)| name),
        secret_id: secret_id.as_deref(),
        tenant: &scenario.tenant_id,
    };
    state.rules().plan(&ctx, || {
        if !state.vault_admit() {
            return reply::kv_throttled();
        }
        match state.token_resource(token) {
            None => return reply::kv_invalid_issuer(&scenario.tenant_id),
            Some(resource) if !is_vault_resource(&resource) => {
                return reply::kv_invalid_audience(&scenario.tenant_id, &resource)
            }
            Some(_) => {}
        }
        match route {
            Some((name, version)) => get_secret(state, &req.host, name, version),
            None => reply::kv_not_found_path(),
        }
    })
}

fn get_secret(state: &State, host: &str, name: &str, version: Option<&str>) -> Reply {
    let secrets = state.secrets.read().unwrap_or_else(|e| e.into_inner());
    let not_found = || {
        reply::kv_secret_not_found(&match version {
            Some(version) => format!("{name}/{version}"),
            None => name.to_string(),
        })
    };
    let Some(entry) = secrets.get(name) else {
        return not_found();
    };
    let found = match version {
        Some(wanted) => entry.versions.iter().find(|v| v.version == wanted),
        None => entry.versions.last(),
    };
    let Some(found) = found else {
        return not_found();
    };
    if !entry.enabled {
        return reply::kv_secret_disabled();
    }
    Reply::json(
        200,
        &json!({
            "value": found.value,
            "id": format!("https://{host}/secrets/{name}/{}", found.version),
            "attributes": {
                "enabled": true,
                "created": found.created,
                "updated": found.created,
                "recoveryLevel": "Recoverable+Purgeable",
            },
        }),
    )
    .with_header("Cache-Control", "no-cache")
    .with_header("x-ms-keyvault-region", &state.scenario.location)
    .with_header("x-ms-keyvault-service-version", "1.9.12.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_routes() {
        assert_eq!(secret_route("/secrets/a"), Some(("a", None)));
        assert_eq!(secret_route("/secrets/a/"), Some(("a", None)));
        assert_eq!(secret_route("/secrets/a/v1"), Some(("a", Some("v1"))));
        assert_eq!(secret_route("/secrets/a/v1/"), Some(("a", Some("v1"))));
        assert_eq!(secret_route("/secrets/"), None);
        assert_eq!(secret_route("/secrets/a/v1/x"), None);
        assert_eq!(secret_route("/keys/a"), None);
    }

    #[test]
    fn api_versions() {
        for ok in [
            "2025-07-01",
            "2026-04-01",
            "7.4",
            "7.6-preview",
            "2024-12-01-preview.2",
        ] {
            assert!(valid_api_version(ok), "{ok}");
        }
        for bad in ["", "2025-7-01", "latest", "2025-07-01-previewX", "7.", ".4"] {
            assert!(!valid_api_version(bad), "{bad}");
        }
    }
}
