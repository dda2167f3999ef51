//! The "Post Webhooks for Bitbucket" app's configuration API (`/rest/webhook/2.0`).
//!
//! The vendor documents `GET` on the collection; creating, updating and deleting through
//! the API is documented without the verbs. Assumed here, and in the operator's client:
//! `POST` on the collection, `PUT` and `DELETE` on `/{id}`. Unverified against a live
//! server (see docs/simulator.md).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bitbucket_events::catalogue::post_webhooks_event_key;
use serde_json::{Value, json};

use crate::Sim;
use crate::access::{self, Denied};
use crate::datacenter::bad_request;
use crate::http::{dc_error, parse_body, valid_target_url};
use crate::state::{Platform, PwConfig, Scope, State};

type Shared = AxumState<Arc<Sim>>;

/// The collection; the one place the assumed verbs live in the simulator.
pub const COLLECTION: &str = "/rest/webhook/2.0/configurations";

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(COLLECTION, get(list).post(create))
        .route(
            &format!("{COLLECTION}/{{id}}"),
            get(get_one).put(update).delete(delete),
        )
        .route("/rest/webhook/2.0/event-types", get(event_types))
}

/// The scope whose admins may manage a configuration: repository, project, or global
/// (`None`: nobody in the simulator is a global administrator).
fn level(project: Option<&str>, slug: Option<&str>, state: &State) -> Option<Scope> {
    match (project, slug) {
        (Some(p), Some(s)) => Some(Scope::Repository(state.server_repository_name(p, s))),
        (Some(p), None) => Some(Scope::Owner(p.to_ascii_uppercase())),
        _ => None,
    }
}

fn check(state: &State, headers: &HeaderMap, scope: Option<&Scope>) -> Result<(), Response> {
    match scope {
        Some(scope) => access::admin(state, headers, Platform::Server, scope)
            .map(|_| ())
            .map_err(|d| crate::datacenter::denied(d, scope)),
        None => match access::authenticated(state, headers) {
            Err(d) => Err(crate::datacenter::denied(d, &Scope::Owner(String::new()))),
            Ok(_) => Err(dc_error(
                StatusCode::UNAUTHORIZED,
                "You are not permitted to access this resource: global configurations need SYS_ADMIN",
                "com.atlassian.bitbucket.AuthorisationException",
            )),
        },
    }
}

/// The configurations that apply to a repository: its own if it has any, else its
/// project's, else the global ones (repository overrides project overrides global).
pub fn effective<'a>(state: &'a State, repository: &str) -> Vec<&'a PwConfig> {
    let (project, slug) = repository.split_once('/').unwrap_or((repository, ""));
    let same =
        |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    let repo: Vec<_> = state
        .post_webhooks
        .iter()
        .filter(|c| same(&c.project_key, project) && same(&c.repository_slug, slug))
        .collect();
    if !repo.is_empty() {
        return repo;
    }
    let proj: Vec<_> = state
        .post_webhooks
        .iter()
        .filter(|c| same(&c.project_key, project) && c.repository_slug.is_none())
        .collect();
    if !proj.is_empty() {
        return proj;
    }
    state
        .post_webhooks
        .iter()
        .filter(|c| c.project_key.is_none())
        .collect()
}

pub fn render(c: &PwConfig) -> Value {
    let mut body = json!({
        "id": c.id,
        "enabled": c.enabled,
        "name": c.name,
        "destinations": [{ "useUrl": true, "url": c.url }],
        "eventTypes": c.event_types,
        "ignoreCerts": c.ignore_certs,
        "httpMethod": c.http_method,
        "enableAuthentication": c.enable_authentication,
    });
    if let Some(p) = &c.project_key {
        body["projectKey"] = json!(p);
    }
    if let Some(s) = &c.repository_slug {
        body["repositorySlug"] = json!(s);
    }
    if let Some(t) = &c.authentication_type {
        body["authenticationType"] = json!(t);
    }
    if let Some(u) = &c.auth_username {
        body["authUsername"] = json!(u);
    }
    body
}

/// Applies a request body to a configuration (every field optional on update).
fn apply(body: &Value, c: &mut PwConfig, creating: bool) -> Result<(), String> {
    let string = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let boolean = |k: &str| body.get(k).and_then(Value::as_bool);
    if let Some(name) = string("name") {
        c.name = name;
    }
    if let Some(destinations) = body.get("destinations") {
        let url = destinations
            .as_array()
            .and_then(|d| d.first())
            .and_then(|d| d.get("url"))
            .and_then(Value::as_str)
            .ok_or("destinations: at least one destination with a url is required")?;
        if !valid_target_url(url) {
            return Err(format!("destinations: {url} is not a valid URL"));
        }
        c.url = url.to_owned();
    }
    if let Some(types) = body.get("eventTypes") {
        let types: Vec<String> = types
            .as_array()
            .ok_or("eventTypes: expected a list")?
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or("eventTypes: expected strings")
            })
            .collect::<Result<_, _>>()?;
        if types.is_empty() {
            return Err("eventTypes: at least one event type is required".to_owned());
        }
        if let Some(bad) = types.iter().find(|t| post_webhooks_event_key(t).is_none()) {
            return Err(format!("eventTypes: {bad} is not a known event type"));
        }
        c.event_types = types;
    }
    if let Some(v) = boolean("enabled") {
        c.enabled = v;
    }
    if let Some(v) = boolean("ignoreCerts") {
        c.ignore_certs = v;
    }
    if let Some(v) = string("httpMethod") {
        c.http_method = v;
    }
    if let Some(v) = boolean("enableAuthentication") {
        c.enable_authentication = v;
    }
    if let Some(v) = string("authenticationType") {
        c.authentication_type = Some(v);
    }
    if let Some(v) = string("authUsername") {
        c.auth_username = Some(v);
    }
    if let Some(v) = string("authPassword") {
        c.auth_password = Some(v);
    }
    if creating && (c.name.trim().is_empty() || c.url.is_empty() || c.event_types.is_empty()) {
        return Err("name, destinations and eventTypes are required".to_owned());
    }
    Ok(())
}

async fn list(s: Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let state = s.lock();
    let project = q.get("projectKey").map(String::as_str);
    let slug = q.get("repositorySlug").map(String::as_str);
    let scope = level(project, slug, &state);
    if let Err(response) = check(&state, &headers, scope.as_ref()) {
        return response;
    }
    let same = |a: &Option<String>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    };
    // A plain JSON array, not a page.
    let values: Vec<Value> = state
        .post_webhooks
        .iter()
        .filter(|c| same(&c.project_key, project) && same(&c.repository_slug, slug))
        .map(render)
        .collect();
    axum::Json(values).into_response()
}

async fn create(s: Shared, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = s.lock();
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    let project = body
        .get("projectKey")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let slug = body
        .get("repositorySlug")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if slug.is_some() && project.is_none() {
        return bad_request("repositorySlug needs a projectKey");
    }
    let scope = level(project.as_deref(), slug.as_deref(), &state);
    if let Err(response) = check(&state, &headers, scope.as_ref()) {
        return response;
    }
    let mut config = PwConfig {
        id: state.next_id(),
        name: String::new(),
        enabled: true,
        url: String::new(),
        event_types: Vec::new(),
        ignore_certs: false,
        project_key: project,
        repository_slug: slug,
        http_method: "POST".to_owned(),
        enable_authentication: false,
        authentication_type: None,
        auth_username: None,
        auth_password: None,
    };
    if let Err(e) = apply(&body, &mut config, true) {
        return bad_request(&e);
    }
    let rendered = render(&config);
    state.post_webhooks.push(config);
    axum::Json(rendered).into_response()
}

fn find(state: &State, id: &str) -> Option<usize> {
    let id: u64 = id.parse().ok()?;
    state.post_webhooks.iter().position(|c| c.id == id)
}

fn not_found(id: &str) -> Response {
    dc_error(
        StatusCode::NOT_FOUND,
        &format!("No webhook configuration with id {id} exists."),
        "com.atlassian.bitbucket.NoSuchEntityException",
    )
}

/// The configuration at `id`, if the caller may administer it.
fn authorised(state: &State, headers: &HeaderMap, id: &str) -> Result<usize, Response> {
    if let Err(d @ Denied::InvalidCredentials) = access::authenticated(state, headers) {
        return Err(crate::datacenter::denied(d, &Scope::Owner(String::new())));
    }
    let index = find(state, id).ok_or_else(|| not_found(id))?;
    let c = &state.post_webhooks[index];
    let scope = level(
        c.project_key.as_deref(),
        c.repository_slug.as_deref(),
        state,
    );
    check(state, headers, scope.as_ref())?;
    Ok(index)
}

async fn get_one(s: Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let state = s.lock();
    match authorised(&state, &headers, &id) {
        Ok(i) => axum::Json(render(&state.post_webhooks[i])).into_response(),
        Err(r) => r,
    }
}

async fn update(s: Shared, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let mut state = s.lock();
    let index = match authorised(&state, &headers, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    let mut config = state.post_webhooks[index].clone();
    if let Err(e) = apply(&body, &mut config, false) {
        return bad_request(&e);
    }
    let rendered = render(&config);
    state.post_webhooks[index] = config;
    axum::Json(rendered).into_response()
}

async fn delete(s: Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut state = s.lock();
    match authorised(&state, &headers, &id) {
        Ok(i) => {
            state.post_webhooks.remove(i);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

async fn event_types() -> Response {
    let types: Vec<&str> = bitbucket_events::catalogue::POST_WEBHOOKS_EVENTS
        .iter()
        .map(|(t, _)| *t)
        .collect();
    axum::Json(types).into_response()
}
