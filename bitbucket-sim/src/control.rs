//! The simulator's test-control API under `/_sim/`, part of its contract (PRODUCT.md):
//!
//! | call | does |
//! |---|---|
//! | `POST /_sim/repositories` `{"flavor","repository","admins","readers"}` | creates a repository and who may do what (extensions: `"ownerAdmins"`, the workspace owners / project admins; `"repositories": [..]` instead of `"repository"` for many at once; `"project"`, a Cloud repository's project key, default `PROJ`) |
//! | `DELETE /_sim/repositories` `{"flavor","repositories"}` | extension: removes repositories and their hooks |
//! | `POST /_sim/tokens` `{"token","user"}` | registers a credential (extension: `"kind"` and `"scopes"` of a Cloud credential) |
//! | `DELETE /_sim/tokens/{token}` | extension: revokes a credential (every call with it answers 401 from then on) |
//! | `PUT /_sim/variants` `{"cloudScopeStatus","cloudUserRefusal","dcStatistics","dcCreateStatus","dcWriteConfiguration","postWebhooksApi","postWebhooksProjectListing"}` | extension: which variant to serve where sources disagree (docs/simulator.md) |
//! | `POST /_sim/events` `{"repository","event"}` | emits an event; answers with each delivery's outcome |
//! | `PUT /_sim/faults` `{"errorRate","status","latencyMs","rateLimitPerHour","routes"}` | injects faults (extensions: `"count"`, `"retryAfter"`, `"after"` with `"stallMs"` or `"body"`: act, then fail or replace the answer); `DELETE` clears them |
//! | `GET /_sim/requests` | counts of API calls received, by method, route and status (extension: `DELETE` resets them) |
//! | `GET /_sim/hooks` | every hook on every repository, for assertions |
//! | `DELETE /_sim/state` | back to empty |

use std::sync::Arc;

use axum::Router;
use axum::extract::{Json, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::delivery::{self, EmitRequest};
use crate::state::{Faults, Platform, Scope, State, Token, TokenKind, Variants};

type Shared = AxumState<Arc<Sim>>;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/_sim/repositories",
            post(create_repository).delete(delete_repositories),
        )
        .route("/_sim/tokens", post(create_token))
        .route("/_sim/tokens/{token}", axum::routing::delete(revoke_token))
        .route("/_sim/variants", put(set_variants).get(get_variants))
        .route("/_sim/events", post(emit))
        .route(
            "/_sim/faults",
            put(set_faults)
                .delete(clear_faults)
                .get(get_faults)
                // An `after: body` answer may be made huge on purpose (over the client's cap).
                .layer(axum::extract::DefaultBodyLimit::max(32 << 20)),
        )
        .route("/_sim/requests", get(requests).delete(reset_requests))
        .route("/_sim/hooks", get(hooks))
        .route("/_sim/state", axum::routing::delete(reset))
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewRepository {
    flavor: String,
    /// One repository "owner/slug", or several in `repositories`.
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    repositories: Vec<String>,
    /// Cloud: the workspace project's key (default `PROJ`); ignored for Data Center,
    /// where the owner is the project.
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    readers: Vec<String>,
    #[serde(default)]
    owner_admins: Vec<String>,
}

fn platform_of(flavor: &str) -> Result<Platform, Response> {
    match flavor {
        "Cloud" => Ok(Platform::Cloud),
        "DataCenter" | "PostWebhooks" => Ok(Platform::Server),
        other => Err(bad(format!(
            "unknown flavor {other}: Cloud, DataCenter or PostWebhooks"
        ))),
    }
}

/// "owner/slug" as the platform keys it (Data Center project keys are upper case).
fn repository_key(platform: Platform, repository: &str) -> Result<(String, String), Response> {
    let Some((owner, slug)) = repository.split_once('/') else {
        return Err(bad(format!("repository {repository:?} must be owner/slug")));
    };
    if owner.is_empty() || slug.is_empty() || slug.contains('/') {
        return Err(bad(format!("repository {repository:?} must be owner/slug")));
    }
    let owner = if platform == Platform::Server {
        owner.to_ascii_uppercase()
    } else {
        owner.to_owned()
    };
    Ok((owner.clone(), format!("{owner}/{slug}")))
}

async fn create_repository(s: Shared, Json(req): Json<NewRepository>) -> Response {
    let platform = match platform_of(&req.flavor) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let names: Vec<&String> = req.repository.iter().chain(&req.repositories).collect();
    if names.is_empty() {
        return bad("repository or repositories is required");
    }
    let mut keys = Vec::new();
    for name in names {
        match repository_key(platform, name) {
            Ok(key) => keys.push(key),
            Err(r) => return r,
        }
    }
    let mut state = s.lock();
    let mut created = Vec::new();
    for (owner, name) in keys {
        let id = state.next_id();
        let repo = state
            .repositories
            .entry((platform, name.clone()))
            .or_insert_with(|| crate::state::Repository {
                id,
                ..Default::default()
            });
        repo.admins.extend(req.admins.iter().cloned());
        repo.readers.extend(req.readers.iter().cloned());
        if platform == Platform::Cloud {
            repo.project = Some(req.project.clone().unwrap_or_else(|| "PROJ".to_owned()));
        }
        let owner_entry = state.owners.entry((platform, owner)).or_default();
        owner_entry.admins.extend(req.owner_admins.iter().cloned());
        created.push(name);
    }
    let body = match created.as_slice() {
        [one] => json!({ "repository": one }),
        _ => json!({ "repositories": created }),
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoneRepositories {
    flavor: String,
    repositories: Vec<String>,
}

/// Removes repositories with their hooks (as deleting a repository does on Bitbucket).
async fn delete_repositories(s: Shared, Json(req): Json<GoneRepositories>) -> Response {
    let platform = match platform_of(&req.flavor) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut state = s.lock();
    let mut removed = 0;
    for name in &req.repositories {
        let key = match repository_key(platform, name) {
            Ok((_, key)) => key,
            Err(r) => return r,
        };
        removed += usize::from(state.repositories.remove(&(platform, key)).is_some());
    }
    Json(json!({ "removed": removed })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    token: String,
    user: String,
    #[serde(default)]
    kind: Option<TokenKind>,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn create_token(s: Shared, Json(req): Json<NewToken>) -> Response {
    if req.token.is_empty() || req.user.is_empty() {
        return bad("token and user must not be empty");
    }
    if req.kind.is_none() && !req.scopes.is_empty() {
        return bad("scopes need a kind");
    }
    if let Some(kind) = req.kind
        && let Some(bad_scope) = req
            .scopes
            .iter()
            .find(|s| !crate::scopes::can_hold(kind, s))
    {
        return bad(format!("a {kind:?} cannot hold the scope {bad_scope}"));
    }
    let token = Token {
        user: req.user.clone(),
        kind: req.kind,
        scopes: req.scopes,
    };
    s.lock().tokens.insert(req.token, token);
    (StatusCode::CREATED, Json(json!({ "user": req.user }))).into_response()
}

async fn revoke_token(
    s: Shared,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match s.lock().tokens.remove(&token) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => (StatusCode::NOT_FOUND, "no such token").into_response(),
    }
}

async fn set_variants(s: Shared, Json(variants): Json<Variants>) -> Response {
    if !matches!(variants.cloud_scope_status, 401 | 403) {
        return bad("cloudScopeStatus must be 401 or 403");
    }
    if !matches!(variants.dc_create_status, 200 | 201) {
        return bad("dcCreateStatus must be 200 or 201");
    }
    let mut state = s.lock();
    state.variants = variants;
    Json(json!(state.variants)).into_response()
}

async fn get_variants(s: Shared) -> Response {
    Json(json!(s.lock().variants)).into_response()
}

async fn emit(s: Shared, Json(req): Json<EmitRequest>) -> Response {
    match delivery::emit(&s, &req).await {
        Ok(deliveries) => Json(json!({ "deliveries": deliveries })).into_response(),
        Err(e) => bad(e),
    }
}

async fn set_faults(s: Shared, Json(faults): Json<Faults>) -> Response {
    if !(0.0..=1.0).contains(&faults.error_rate) {
        return bad("errorRate must be between 0 and 1");
    }
    let mut state = s.lock();
    state.faults = faults;
    state.rate_windows.clear();
    Json(json!(state.faults)).into_response()
}

async fn get_faults(s: Shared) -> Response {
    Json(json!(s.lock().faults)).into_response()
}

async fn clear_faults(s: Shared) -> Response {
    let mut state = s.lock();
    state.faults = Faults::default();
    state.rate_windows.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn requests(s: Shared) -> Response {
    let state = s.lock();
    let rows: Vec<Value> = state
        .requests
        .iter()
        .map(|((method, route, status), count)| {
            json!({ "method": method, "route": route, "status": status, "count": count })
        })
        .collect();
    let total: u64 = state.requests.values().sum();
    Json(json!({ "total": total, "requests": rows })).into_response()
}

async fn reset_requests(s: Shared) -> Response {
    s.lock().requests.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// Every hook with its flavor, scope and (for assertions) its secret.
pub fn all_hooks(state: &State) -> Vec<Value> {
    let mut out = Vec::new();
    let scopes = state
        .repositories
        .keys()
        .map(|(p, n)| (*p, Scope::Repository(n.clone())))
        .chain(
            state
                .owners
                .keys()
                .map(|(p, n)| (*p, Scope::Owner(n.clone()))),
        );
    for (platform, scope) in scopes {
        for hook in state.hooks(platform, &scope).into_iter().flatten() {
            let (flavor, id) = match platform {
                Platform::Cloud => ("Cloud", hook.uuid.clone()),
                Platform::Server => ("DataCenter", hook.id.to_string()),
            };
            out.push(json!({
                "flavor": flavor,
                "scope": match scope { Scope::Repository(_) => "repository", Scope::Owner(_) => "owner" },
                "repository": scope.name(),
                "id": id,
                "title": hook.title,
                "url": hook.url,
                "active": hook.active,
                "events": hook.events,
                "secret": hook.secret,
                "configuration": hook.configuration,
                "skipCertVerification": hook.skip_cert_verification,
            }));
        }
    }
    for c in &state.post_webhooks {
        let repository = match (&c.project_key, &c.repository_slug) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            (Some(p), None) => p.clone(),
            _ => String::new(),
        };
        out.push(json!({
            "flavor": "PostWebhooks",
            "scope": if c.repository_slug.is_some() { "repository" } else if c.project_key.is_some() { "owner" } else { "global" },
            "repository": repository,
            "id": c.id.to_string(),
            "title": c.name,
            "url": c.url,
            "active": c.enabled,
            "events": c.event_types,
            "secret": Value::Null,
            "skipCertVerification": c.ignore_certs,
        }));
    }
    out
}

async fn hooks(s: Shared) -> Response {
    Json(json!(all_hooks(&s.lock()))).into_response()
}

async fn reset(s: Shared) -> Response {
    *s.lock() = State::default();
    StatusCode::NO_CONTENT.into_response()
}
