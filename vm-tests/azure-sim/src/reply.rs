//! Responses as data (status, headers, body) and the canned bodies both services send.
//! Bodies marked "observed" are copied from real service responses in
//! reference/azure-specs (the tests compare them to those files).

use bytes::Bytes;
use serde_json::{json, Value};

/// Key Vault service version the real service reported in the observed recordings.
const KV_SERVICE_VERSION: &str = "1.9.12.0";

/// A complete response before it is put on the wire.
#[derive(Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: Bytes::from(value.to_string()),
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(text.into()),
        }
    }

    /// Sets a header, replacing any header of the same name (case-insensitive).
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.set_header(name, value);
        self
    }

    /// Replaces the body; JSON strings are sent as raw text, anything else as JSON.
    pub fn set_body(&mut self, body: &Value) {
        let (bytes, content_type) = match body {
            Value::String(s) => (Bytes::from(s.clone()), "text/plain; charset=utf-8"),
            other => (
                Bytes::from(other.to_string()),
                "application/json; charset=utf-8",
            ),
        };
        self.body = bytes;
        self.set_header("Content-Type", content_type);
    }

    /// The error code a test most likely asserts on: IMDS `error`, or Key Vault's
    /// `innererror.code` falling back to `error.code`. Never includes values.
    pub fn error_code(&self) -> Option<String> {
        if self.status < 400 {
            return None;
        }
        let value: Value = serde_json::from_slice(&self.body).ok()?;
        match value.get("error")? {
            Value::String(s) => Some(s.clone()),
            Value::Object(obj) => obj
                .get("innererror")
                .and_then(|inner| inner.get("code"))
                .or_else(|| obj.get("code"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- IMDS bodies

/// Token endpoint without `Metadata: true` (entra-docs table, 400 bad_request_102).
pub(crate) fn imds_token_missing_metadata() -> Reply {
    Reply::json(
        400,
        &json!({"error": "bad_request_102", "error_description": "Required metadata header not specified"}),
    )
}

/// Instance endpoints without `Metadata: true` (quoted in MicrosoftDocs/azure-docs #91624).
pub(crate) fn imds_instance_missing_metadata() -> Reply {
    Reply::json(
        400,
        &json!({"error": "Bad request: . Required metadata header not specified"}),
    )
}

/// Missing or unknown api-version: the docs' body, listing the three newest versions.
pub(crate) fn imds_bad_api_version(newest: &[&str]) -> Reply {
    Reply::json(
        400,
        &json!({
            "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
            "newest-versions": newest,
        }),
    )
}

pub(crate) fn imds_identity_not_found() -> Reply {
    Reply::json(
        400,
        &json!({"error": "invalid_request", "error_description": "Identity not found"}),
    )
}

pub(crate) fn imds_invalid_request(description: &str) -> Reply {
    Reply::json(
        400,
        &json!({"error": "invalid_request", "error_description": description}),
    )
}

/// Instance-style 4xx/5xx whose exact body Azure does not document.
pub(crate) fn imds_error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({ "error": message }))
}

/// Fault 3 of azure-protocol.md: the token endpoint failing to reach Entra ID.
pub(crate) fn imds_token_500() -> Reply {
    Reply::json(
        500,
        &json!({"error": "unknown", "error_description": "Failed to retrieve token from the Active directory…"}),
    )
}

// ----------------------------------------------------------- Key Vault bodies

fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Reply {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    let mut reply = Reply::json(status, &json!({ "error": error }));
    reply.set_header("Cache-Control", "no-cache");
    reply.set_header("x-ms-keyvault-service-version", KV_SERVICE_VERSION);
    reply
}

fn challenge_header(tenant: &str) -> String {
    format!("Bearer authorization=\"https://login.windows.net/{tenant}\", resource=\"https://vault.azure.net\"")
}

/// No bearer token: the challenge the SDKs use to discover tenant and resource (observed).
pub(crate) fn kv_challenge(tenant: &str, region: &str) -> Reply {
    let mut reply = kv_error(
        401,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
        None,
    );
    for (name, value) in [
        ("Pragma", "no-cache"),
        ("Expires", "-1"),
        ("WWW-Authenticate", challenge_header(tenant).as_str()),
        ("x-ms-keyvault-region", region),
        (
            "Strict-Transport-Security",
            "max-age=31536000;includeSubDomains",
        ),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        reply.set_header(name, value);
    }
    reply
}

/// A token from another issuer (observed; the "found" tenant is the one in the recording).
pub(crate) fn kv_invalid_issuer(tenant: &str) -> Reply {
    let message = format!(
        "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/96be4b7a-defb-4dc2-a31f-49ee6145d5ab/."
    );
    kv_error(401, "Unauthorized", &message, None)
        .with_header("WWW-Authenticate", &challenge_header(tenant))
}

/// A sim-issued token for another resource (message format not observed; AKV10022 is the
/// real code for an audience mismatch).
pub(crate) fn kv_invalid_audience(tenant: &str, found: &str) -> Reply {
    let message =
        format!("AKV10022: Invalid audience. Expected https://vault.azure.net, found: {found}.");
    kv_error(401, "Unauthorized", &message, None)
        .with_header("WWW-Authenticate", &challenge_header(tenant))
}

/// RBAC role assignment missing or not yet propagated (observed, full body).
pub(crate) fn kv_forbidden_by_rbac() -> Reply {
    kv_error(
        403,
        "Forbidden",
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=00000000-0000-0000-0000-000000000000;oid=00000000-0000-0000-0000-000000000000;iss=https://sts.windows.net/00000000-0000-0000-0000-000000000000/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/some-rg/providers/microsoft.keyvault/vaults/someakv/secrets/somesecret'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: someakv;location=eastus\r\n",
        Some("ForbiddenByRbac"),
    )
}

/// Access-policy vault without `get` permission (observed).
pub(crate) fn kv_access_denied() -> Reply {
    kv_error(
        403,
        "Forbidden",
        "The user, group or application 'appid=<appid>;oid=<oid>;iss=<iss>' does not have secrets get permission on key vault 'MyAzureKeyVault;location=eastus'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
        Some("AccessDenied"),
    )
}

/// The secret exists but is disabled (observed).
pub(crate) fn kv_secret_disabled() -> Reply {
    kv_error(
        403,
        "Forbidden",
        "Operation get is not allowed on a disabled secret.",
        Some("SecretDisabled"),
    )
}

/// No such secret (observed; `name_or_id` is the name, or name/version).
pub(crate) fn kv_secret_not_found(name_or_id: &str) -> Reply {
    let message = format!(
        "A secret with (name/id) {name_or_id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
    );
    kv_error(404, "SecretNotFound", &message, None)
}

/// Vault throttling (observed: no Retry-After header).
pub(crate) fn kv_throttled() -> Reply {
    kv_error(
        429,
        "Throttled",
        "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
        None,
    )
    .with_header("Pragma", "no-cache")
    .with_header("Expires", "-1")
}

/// Malformed request (body format not observed; `BadParameter` is the real code).
pub(crate) fn kv_bad_parameter(message: &str) -> Reply {
    kv_error(400, "BadParameter", message, None)
}

pub(crate) fn kv_not_found_path() -> Reply {
    kv_error(
        404,
        "NotFound",
        "The requested resource does not exist.",
        None,
    )
}

pub(crate) fn kv_method_not_allowed(method: &str) -> Reply {
    kv_error(
        405,
        "BadParameter",
        &format!("Method {method} is not supported by azure-sim (it serves GetSecret only)."),
        None,
    )
}
