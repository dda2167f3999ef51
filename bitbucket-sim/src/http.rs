//! Authentication, error bodies and small request helpers every API shares.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::state::State;

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Principal {
    pub token: String,
    pub user: String,
}

/// The outcome of reading the Authorization header.
pub enum Caller {
    Anonymous,
    Known(Principal),
    /// Credentials were sent but are not valid.
    Invalid,
}

/// Bearer `<token>`, or Basic `<user>:<token>` where the token is registered to that user.
pub fn authenticate(state: &State, headers: &HeaderMap) -> Caller {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Caller::Anonymous;
    };
    let known = |token: &str, user: Option<&str>| match state.user(token) {
        Some(owner) if user.is_none_or(|u| u == owner) => Caller::Known(Principal {
            token: token.to_owned(),
            user: owner.to_owned(),
        }),
        _ => Caller::Invalid,
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return known(token.trim(), None);
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return known(password, Some(user));
        }
    }
    Caller::Invalid
}

/// A key for per-credential rate limiting that never stores the credential itself.
pub fn credential_key(headers: &HeaderMap) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match headers.get(header::AUTHORIZATION) {
        Some(v) => v.as_bytes().hash(&mut hasher),
        None => return "anonymous".to_owned(),
    }
    format!("{:x}", hasher.finish())
}

/// Cloud's error body: `{"type":"error","error":{"message","detail"}}`.
pub fn cloud_error(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    let mut error = json!({ "message": message });
    if let Some(detail) = detail {
        error["detail"] = json!(detail);
    }
    (
        status,
        axum::Json(json!({ "type": "error", "error": error })),
    )
        .into_response()
}

/// Data Center's error body: `{"errors":[{"context","message","exceptionName"}]}`.
pub fn dc_error(status: StatusCode, message: &str, exception: &str) -> Response {
    let body = json!({
        // `context` names a field; the spec types it as a string, so it is left out here.
        "errors": [{ "message": message, "exceptionName": exception }]
    });
    (status, axum::Json(body)).into_response()
}

/// `scheme://host` of the request, for pagination and self links.
pub fn origin(headers: &HeaderMap, tls: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", if tls { "https" } else { "http" })
}

/// Whether `url` is an absolute http(s) URL with a host.
pub fn valid_target_url(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}

/// A JSON body that failed to parse, as each API words it.
pub fn body_error(flavor: bitbucket_events::Backend, e: &str) -> Response {
    match flavor {
        bitbucket_events::Backend::Cloud => {
            cloud_error(StatusCode::BAD_REQUEST, "Bad request", Some(e))
        }
        _ => dc_error(
            StatusCode::BAD_REQUEST,
            &format!("The request body is not valid JSON: {e}"),
            "com.atlassian.bitbucket.rest.BadRequestException",
        ),
    }
}

/// Parses an optional JSON body.
pub fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("expected a JSON object".to_owned())
    }
}
