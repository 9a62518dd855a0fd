//! The simulated Instance Metadata Service: protocol checks, token, instance document and
//! userData, in the order the real service applies them.

use std::collections::BTreeMap;

use base64::Engine as _;
use rand::Rng as _;
use serde_json::{json, Value};

use crate::reply::{self, Reply};
use crate::rules::{Endpoint, MatchCtx, Plan, Service};
use crate::server::RequestInfo;
use crate::state::{unix_now, State};

/// IMDS api-versions the real service accepts (docs, "Versioning"), oldest first.
pub const KNOWN_API_VERSIONS: &[&str] = &[
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2022-02-01",
    "2022-03-01",
    "2022-05-01",
    "2022-07-01",
    "2022-08-01",
    "2022-11-01",
    "2023-07-01",
    "2023-11-15",
    "2024-03-15",
    "2024-07-17",
    "2025-04-07",
];

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const INSTANCE_PATH: &str = "/metadata/instance";
const USER_DATA_PATH: &str = "/metadata/instance/compute/userData";
const VERSIONS_PATH: &str = "/metadata/versions";
/// Lifetime the docs' sample token response advertises.
const TOKEN_LIFETIME_S: u64 = 3599;

/// The endpoint a path belongs to, for rule matching.
pub(crate) fn classify(path: &str) -> Option<Endpoint> {
    if path == TOKEN_PATH {
        Some(Endpoint::Token)
    } else if path == USER_DATA_PATH {
        Some(Endpoint::UserData)
    } else if path == INSTANCE_PATH || path.starts_with("/metadata/instance/") {
        Some(Endpoint::Instance)
    } else {
        None
    }
}

/// Query parameters, or the name of the first repeated one (IMDS rejects repeats).
pub(crate) fn parse_query(query: &str) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(key.to_string(), value.to_string()).is_some() {
            return Err(key.to_string());
        }
    }
    Ok(params)
}

fn newest_versions() -> Vec<&'static str> {
    KNOWN_API_VERSIONS.iter().rev().take(3).copied().collect()
}

pub(crate) fn handle(state: &State, req: &RequestInfo) -> Plan {
    let endpoint = classify(&req.path);
    if req.method != "GET" {
        return Plan::plain(reply::imds_error(
            405,
            "Method not allowed. Only GET is supported",
        ));
    }
    if req.has_forwarded_for {
        return Plan::plain(reply::imds_error(
            400,
            "Bad request. Requests with an X-Forwarded-For header are not supported (IMDS must not be reached through a proxy)",
        ));
    }
    if !req.has_metadata_header {
        return Plan::plain(if endpoint == Some(Endpoint::Token) {
            reply::imds_token_missing_metadata()
        } else {
            reply::imds_instance_missing_metadata()
        });
    }
    let params = match parse_query(&req.query) {
        Ok(params) => params,
        Err(repeated) => {
            return Plan::plain(reply::imds_error(
                400,
                &format!("Bad request. Query parameter '{repeated}' is specified more than once"),
            ))
        }
    };
    if req.path == VERSIONS_PATH {
        return Plan::plain(Reply::json(
            200,
            &json!({ "apiVersions": KNOWN_API_VERSIONS }),
        ));
    }
    let version_ok = params
        .get("api-version")
        .is_some_and(|v| KNOWN_API_VERSIONS.contains(&v.as_str()));
    if !version_ok {
        return Plan::plain(reply::imds_bad_api_version(&newest_versions()));
    }
    let ctx = MatchCtx {
        service: Service::Imds,
        endpoint,
        secret_name: None,
        secret_id: None,
        tenant: &state.scenario.tenant_id,
    };
    state.rules().plan(&ctx, || match endpoint {
        Some(Endpoint::Token) => token(state, &params),
        Some(Endpoint::Instance | Endpoint::UserData) => instance(state, &req.path, &params),
        _ => reply::imds_error(404, "Not found"),
    })
}

fn token(state: &State, params: &BTreeMap<String, String>) -> Reply {
    let resource = match params.get("resource") {
        Some(resource) if !resource.is_empty() => resource.clone(),
        _ => return reply::imds_invalid_request("Required query variable 'resource' is missing"),
    };
    let identity = match resolve_identity(state, params) {
        Ok(identity) => identity,
        Err(reply) => return reply,
    };
    let now = unix_now();
    let expires_on = now + TOKEN_LIFETIME_S;
    let not_before = now.saturating_sub(300);
    let access_token = fake_jwt(state, &resource, &identity, not_before, expires_on);
    state.remember_token(access_token.clone(), resource.clone());
    Reply::json(
        200,
        &json!({
            "access_token": access_token,
            "refresh_token": "",
            "expires_in": TOKEN_LIFETIME_S.to_string(),
            "expires_on": expires_on.to_string(),
            "not_before": not_before.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

/// Which identity a token request names, following IMDS: an explicit id must be assigned;
/// no id means the system identity, or the only user-assigned one.
fn resolve_identity(state: &State, params: &BTreeMap<String, String>) -> Result<String, Reply> {
    let ids = &state.scenario.identities;
    let given: Vec<(&str, &String)> = ["client_id", "object_id", "msi_res_id"]
        .into_iter()
        .filter_map(|key| params.get(key).map(|value| (key, value)))
        .collect();
    match given.as_slice() {
        [] => {
            let user_assigned = ids
                .client_ids
                .len()
                .max(ids.object_ids.len())
                .max(ids.msi_res_ids.len());
            if ids.system {
                Ok("system".into())
            } else if user_assigned == 1 {
                Ok("user-assigned".into())
            } else if user_assigned > 1 {
                Err(reply::imds_invalid_request(
                    "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
                ))
            } else {
                Err(reply::imds_identity_not_found())
            }
        }
        [(kind, value)] => {
            let list = match *kind {
                "client_id" => &ids.client_ids,
                "object_id" => &ids.object_ids,
                _ => &ids.msi_res_ids,
            };
            if list.iter().any(|known| known.eq_ignore_ascii_case(value)) {
                Ok(format!("{kind}={value}"))
            } else {
                Err(reply::imds_identity_not_found())
            }
        }
        _ => Err(reply::imds_invalid_request(
            "Only one of client_id, object_id or msi_res_id can be specified",
        )),
    }
}

/// An opaque token shaped like an Entra JWT (header.claims.signature) so clients that peek
/// at it see something plausible; the random signature makes every token unique.
fn fake_jwt(state: &State, resource: &str, identity: &str, nbf: u64, exp: u64) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "azure-sim"});
    let tenant = &state.scenario.tenant_id;
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": nbf,
        "nbf": nbf,
        "exp": exp,
        "tid": tenant,
        "sub": identity,
        "xms_mirid": format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            state.scenario.subscription_id, state.scenario.resource_group, state.scenario.name
        ),
    });
    let signature: [u8; 32] = rand::rng().random();
    format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string()),
        b64.encode(signature)
    )
}

/// The instance document, shaped like the 2021-11-15 example plus the docs' network sample.
pub(crate) fn instance_document(state: &State) -> Value {
    let s = &state.scenario;
    let tags_list: Vec<Value> = s
        .tags
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let resource_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
        s.subscription_id, s.resource_group, s.name
    );
    let public_keys: Vec<Value> = s
        .public_keys
        .iter()
        .map(|key| json!({"keyData": key.key_data, "path": key.path}))
        .collect();
    let subnet = match s.private_ip.rsplit_once('.') {
        Some((prefix, _)) => format!("{prefix}.0"),
        None => s.private_ip.clone(),
    };
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "isHostCompatibilityLayerVm": "false",
            "licenseType": "",
            "location": s.location,
            "name": s.name,
            "offer": "",
            "osProfile": {
                "adminUsername": s.admin_username,
                "computerName": s.computer_name(),
                "disablePasswordAuthentication": s.disable_password_authentication.to_string()
            },
            "osType": "Linux",
            "placementGroupId": "",
            "plan": {"name": "", "product": "", "publisher": ""},
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "priority": "",
            "provider": "Microsoft.Compute",
            "publicKeys": public_keys,
            "publisher": "",
            "resourceGroupName": s.resource_group,
            "resourceId": resource_id,
            "securityProfile": {
                "secureBootEnabled": "true",
                "virtualTpmEnabled": "true",
                "encryptionAtHost": "false",
                "securityType": "TrustedLaunch"
            },
            "sku": "",
            "storageProfile": {
                "dataDisks": [],
                "imageReference": {"id": "", "offer": "", "publisher": "", "sku": "", "version": ""},
                "osDisk": {"caching": "ReadWrite", "createOption": "FromImage", "diskSizeGB": "30", "name": format!("{}-osdisk", s.name), "osType": "Linux"},
                "resourceDisk": {"size": "0"}
            },
            "subscriptionId": s.subscription_id,
            "tags": tags.join(";"),
            "tagsList": tags_list,
            "userData": state.user_data().unwrap_or_default(),
            "version": "",
            "vmId": s.vm_id,
            "vmScaleSetName": "",
            "vmSize": s.vm_size,
            "zone": s.zone
        },
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": s.private_ip, "publicIpAddress": ""}],
                    "subnet": [{"address": subnet, "prefix": "24"}]
                },
                "ipv6": {"ipAddress": []},
                "macAddress": "000D3AF806EC"
            }]
        }
    })
}

/// `/metadata/instance[/a/b/...]`: objects as JSON; leaves only with `format=text`.
fn instance(state: &State, path: &str, params: &BTreeMap<String, String>) -> Reply {
    let format = params.get("format").map(String::as_str).unwrap_or("json");
    if format != "json" && format != "text" {
        return reply::imds_error(
            400,
            "Bad request. The 'format' query parameter must be json or text",
        );
    }
    let document = instance_document(state);
    let rest = path.strip_prefix(INSTANCE_PATH).unwrap_or("");
    let mut node = &document;
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        let next = match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return reply::imds_error(404, "Not found"),
        }
    }
    match (node, format) {
        (Value::Object(_) | Value::Array(_), "json") => Reply::json(200, node),
        (Value::Object(map), _) => {
            Reply::text(200, map.keys().cloned().collect::<Vec<_>>().join("\n"))
        }
        (Value::Array(items), _) => Reply::text(
            200,
            (0..items.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (Value::String(text), "text") => Reply::text(200, text.clone()),
        (leaf, "text") => Reply::text(200, leaf.to_string()),
        (_, _) => reply::imds_error(
            400,
            "Bad request. Leaf nodes can only be requested with format=text",
        ),
    }
}
