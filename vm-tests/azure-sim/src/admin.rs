//! `/_sim/...` on the IMDS listener: live changes for scripts and VM tests. Admin requests
//! are not Azure traffic, so they are neither recorded nor subject to rules.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use crate::rules::Rule;
use crate::server::{full, ResponseBody};
use crate::state::State;

/// Large enough for user data well over IMDS's 64 KB limit (fault 8 needs that).
const MAX_ADMIN_BODY: usize = 8 * 1024 * 1024;

fn text(status: u16, message: impl Into<String>) -> Response<ResponseBody> {
    full(
        status,
        &[("Content-Type".into(), "text/plain; charset=utf-8".into())],
        Bytes::from(message.into() + "\n"),
    )
}

fn json_response(status: u16, value: &serde_json::Value) -> Response<ResponseBody> {
    full(
        status,
        &[("Content-Type".into(), "application/json".into())],
        Bytes::from(value.to_string()),
    )
}

fn no_content() -> Response<ResponseBody> {
    full(204, &[], Bytes::new())
}

async fn body_text(req: Request<Incoming>) -> Result<String, Response<ResponseBody>> {
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| text(400, format!("cannot read the request body: {e}")))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| text(400, "the request body must be UTF-8 text"))
}

pub(crate) async fn handle(req: Request<Incoming>, state: &State) -> Response<ResponseBody> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let route = path.trim_start_matches("/_sim/").trim_end_matches('/');
    let segments: Vec<&str> = route.split('/').collect();
    tracing::debug!("admin {method} {path}");
    let result = match (method.as_str(), segments.as_slice()) {
        ("GET", ["requests"]) => match serde_json::to_value(state.requests()) {
            Ok(list) => Ok(json_response(200, &list)),
            Err(e) => Ok(text(500, format!("cannot serialise the request log: {e}"))),
        },
        ("PUT", ["secrets", name]) => {
            let name = name.to_string();
            body_text(req).await.map(|value| {
                let version = state.set_secret(&name, &value);
                json_response(200, &json!({"name": name, "version": version}))
            })
        }
        ("DELETE", ["secrets", name]) => Ok(if state.remove_secret(name) {
            no_content()
        } else {
            text(404, format!("no secret named {name}"))
        }),
        ("PUT", ["secrets", name, "enabled"]) => {
            let name = name.to_string();
            body_text(req).await.map(|flag| match flag.trim() {
                "true" | "false" => {
                    if state.set_secret_enabled(&name, flag.trim() == "true") {
                        no_content()
                    } else {
                        text(404, format!("no secret named {name}"))
                    }
                }
                _ => text(400, "the body must be `true` or `false`"),
            })
        }
        ("POST", ["wireserver", "incarnation"]) => {
            let incarnation = state.next_incarnation();
            Ok(json_response(200, &json!({ "incarnation": incarnation })))
        }
        ("PUT", ["user-data"]) => body_text(req).await.map(|value| {
            state.set_user_data(Some(value));
            no_content()
        }),
        ("DELETE", ["user-data"]) => {
            state.set_user_data(None);
            Ok(no_content())
        }
        ("PUT", ["rules"]) => body_text(req).await.map(|body| {
            let parsed = {
                let de = &mut serde_json::Deserializer::from_str(&body);
                serde_path_to_error::deserialize::<_, Vec<Rule>>(de)
                    .map_err(|e| anyhow::anyhow!("at `{}`: {}", e.path(), e.inner()))
            };
            match parsed.and_then(|rules| state.try_set_rules(rules)) {
                Ok(()) => no_content(),
                Err(e) => text(400, format!("rules rejected: {e:#}")),
            }
        }),
        (_, ["requests" | "user-data" | "rules"] | ["secrets", ..] | ["wireserver", ..]) => {
            Ok(text(405, format!("{method} is not supported on {path}")))
        }
        _ => Ok(text(
            404,
            format!("unknown admin path {path}; see docs/azure-sim.md"),
        )),
    };
    result.unwrap_or_else(|response| response)
}
