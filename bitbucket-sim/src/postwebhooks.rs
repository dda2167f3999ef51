//! The "Post Webhooks for Bitbucket" app's configuration APIs.
//!
//! - v2 (app 3.5.5 and later, `/rest/webhook/2.0`): the vendor documents `GET` on the
//!   collection and its event catalogue at `/configurations/event-types`; creating,
//!   updating and deleting are documented without the verbs. Assumed here, as in Jenkins'
//!   v2 manager: `POST` on the collection, `PUT` and `DELETE` on `/{id}`; `PUT` replaces
//!   the configuration (unverified; so a client must send back what it read).
//! - v1 (before 3.5.5, `/rest/webhook/1.0/projects/{KEY}/repos/{slug}/configurations`):
//!   `title`, `url`, `enabled`, filters and one boolean per trigger (vendor help pages,
//!   Jenkins' v1 manager).
//!
//! A server serves one of them: `PUT /_sim/variants {"postWebhooksApi":"v1"}` switches.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bitbucket_events::catalogue::{POST_WEBHOOKS_V1_TRIGGERS, post_webhooks_event_key};
use serde_json::{Value, json};

use crate::Sim;
use crate::access::{self, Denied};
use crate::datacenter::bad_request;
use crate::http::{dc_error, parse_body, valid_target_url};
use crate::state::{
    AppApi, EventTypesAnswer, Platform, ProjectListing, PwConfig, RepositoryListing, Scope, State,
};

type Shared = AxumState<Arc<Sim>>;

/// The collection; the one place the assumed verbs live in the simulator.
pub const COLLECTION: &str = "/rest/webhook/2.0/configurations";

/// The v1 collection of one repository.
pub const V1_COLLECTION: &str =
    "/rest/webhook/1.0/projects/{projectKey}/repos/{repositorySlug}/configurations";

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(COLLECTION, get(list).post(create))
        .route(&format!("{COLLECTION}/event-types"), get(event_types))
        .route(
            &format!("{COLLECTION}/{{id}}"),
            get(get_one).put(update).delete(delete),
        )
        .route(V1_COLLECTION, get(v1_list).post(v1_create))
        .route(
            &format!("{V1_COLLECTION}/{{id}}"),
            get(v1_get).put(v1_update).delete(v1_delete),
        )
}

/// The answer of a server whose app does not serve this API version.
fn no_such_api(state: &State, wanted: AppApi) -> Result<(), Response> {
    if state.variants.post_webhooks_api == wanted {
        return Ok(());
    }
    Err(dc_error(
        StatusCode::NOT_FOUND,
        "Not Found",
        "com.sun.jersey.api.NotFoundException",
    ))
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
    let mut body = Value::Object(c.other.clone());
    for (key, value) in [
        ("id", json!(c.id)),
        ("enabled", json!(c.enabled)),
        ("name", json!(c.name)),
        ("eventTypes", json!(c.event_types)),
        ("ignoreCerts", json!(c.ignore_certs)),
        ("httpMethod", json!(c.http_method)),
        ("enableAuthentication", json!(c.enable_authentication)),
    ] {
        body[key] = value;
    }
    if body.get("destinations").is_none() {
        body["destinations"] = json!([{ "useUrl": true, "url": c.url }]);
    }
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

/// The fields the simulator interprets; the rest is kept in `other` as sent.
const KNOWN: &[&str] = &[
    "id",
    "name",
    "enabled",
    "eventTypes",
    "ignoreCerts",
    "httpMethod",
    "enableAuthentication",
    "authenticationType",
    "authUsername",
    "authPassword",
    "projectKey",
    "repositorySlug",
];

/// A configuration from a request body: create, or replace on update (`PUT` replaces:
/// what is left out takes its default). `old` keeps the id, the level and a write-only
/// password the body leaves out for the same user.
fn from_body(body: &Value, id: u64, old: Option<&PwConfig>) -> Result<PwConfig, String> {
    let mut c = PwConfig {
        id,
        name: String::new(),
        enabled: true,
        url: String::new(),
        event_types: Vec::new(),
        ignore_certs: false,
        project_key: None,
        repository_slug: None,
        http_method: "POST".to_owned(),
        enable_authentication: false,
        authentication_type: None,
        auth_username: None,
        auth_password: None,
        other: Default::default(),
    };
    apply(body, &mut c)?;
    if let Some(old) = old {
        c.project_key = old.project_key.clone();
        c.repository_slug = old.repository_slug.clone();
        if c.auth_password.is_none() && c.auth_username == old.auth_username {
            c.auth_password = old.auth_password.clone();
        }
    }
    if let Some(object) = body.as_object() {
        c.other = object
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    Ok(c)
}

/// Applies a request body to a configuration.
fn apply(body: &Value, c: &mut PwConfig) -> Result<(), String> {
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
    if c.name.trim().is_empty() || c.url.is_empty() || c.event_types.is_empty() {
        return Err("name, destinations and eventTypes are required".to_owned());
    }
    Ok(())
}

async fn list(s: Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let state = s.lock();
    if let Err(r) = no_such_api(&state, AppApi::V2) {
        return r;
    }
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
    // Whether `projectKey` alone also answers the project's repository configurations
    // is not documented: a variant serves each answer.
    let with_repositories = project.is_some()
        && slug.is_none()
        && state.variants.post_webhooks_project_listing == ProjectListing::WithRepositories;
    // Nor whether a repository's listing also answers its project's own configurations.
    let with_project = slug.is_some()
        && state.variants.post_webhooks_repository_listing == RepositoryListing::WithProject;
    // A plain JSON array, not a page.
    let values: Vec<Value> = state
        .post_webhooks
        .iter()
        .filter(|c| {
            same(&c.project_key, project)
                && (with_repositories
                    || same(&c.repository_slug, slug)
                    || (with_project && c.repository_slug.is_none()))
        })
        .map(render)
        .collect();
    axum::Json(values).into_response()
}

async fn create(s: Shared, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = s.lock();
    if let Err(r) = no_such_api(&state, AppApi::V2) {
        return r;
    }
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
    let mut config = match from_body(&body, state.next_id(), None) {
        Ok(c) => c,
        Err(e) => return bad_request(&e),
    };
    config.project_key = project;
    config.repository_slug = slug;
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
    no_such_api(state, AppApi::V2)?;
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
    let old = &state.post_webhooks[index];
    let config = match from_body(&body, old.id, Some(old)) {
        Ok(c) => c,
        Err(e) => return bad_request(&e),
    };
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

async fn event_types(s: Shared) -> Response {
    let state = s.lock();
    if let Err(r) = no_such_api(&state, AppApi::V2) {
        return r;
    }
    let types = bitbucket_events::catalogue::POST_WEBHOOKS_EVENTS
        .iter()
        .map(|(t, _)| *t);
    // The vendor shows no answer: each shape a client may meet is a variant.
    let body = match state.variants.post_webhooks_event_types {
        EventTypesAnswer::Names => json!(types.collect::<Vec<_>>()),
        EventTypesAnswer::Objects => json!(
            types
                .map(|t| json!({ "id": t, "name": t.to_lowercase().replace('_', " ") }))
                .collect::<Vec<_>>()
        ),
        EventTypesAnswer::Object => json!(
            types
                .map(|t| (t.to_owned(), json!(t.to_lowercase().replace('_', " "))))
                .collect::<serde_json::Map<_, _>>()
        ),
        EventTypesAnswer::Refused => {
            return dc_error(
                StatusCode::UNAUTHORIZED,
                "You are not permitted to access this resource",
                "com.atlassian.bitbucket.AuthorisationException",
            );
        }
    };
    axum::Json(body).into_response()
}

// ------------------------------------------------------------------ v1

/// A v1 configuration: title, url, enabled, one boolean per trigger, and its filters.
fn render_v1(c: &PwConfig) -> Value {
    let mut body = Value::Object(c.other.clone());
    body["id"] = json!(c.id);
    body["title"] = json!(c.name);
    body["url"] = json!(c.url);
    body["enabled"] = json!(c.enabled);
    for (trigger, event) in POST_WEBHOOKS_V1_TRIGGERS {
        body[*trigger] = json!(c.event_types.iter().any(|e| e == event));
    }
    body
}

/// A v1 configuration from a body (create, or replace on update).
fn from_v1_body(body: &Value, id: u64, project: &str, slug: &str) -> Result<PwConfig, String> {
    let object = body.as_object().ok_or("expected a JSON object")?;
    let title = object
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let url = object
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if title.trim().is_empty() || !valid_target_url(url) {
        return Err("title and a valid url are required".to_owned());
    }
    let event_types = POST_WEBHOOKS_V1_TRIGGERS
        .iter()
        .filter(|(t, _)| object.get(*t).and_then(Value::as_bool).unwrap_or(false))
        .map(|(_, e)| (*e).to_owned())
        .collect();
    let interpreted = |k: &str| {
        ["id", "title", "url", "enabled"].contains(&k)
            || POST_WEBHOOKS_V1_TRIGGERS.iter().any(|(t, _)| *t == k)
    };
    Ok(PwConfig {
        id,
        name: title.to_owned(),
        enabled: object
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        url: url.to_owned(),
        event_types,
        ignore_certs: false,
        project_key: Some(project.to_owned()),
        repository_slug: Some(slug.to_owned()),
        http_method: "POST".to_owned(),
        enable_authentication: false,
        authentication_type: None,
        auth_username: None,
        auth_password: None,
        other: object
            .iter()
            .filter(|(k, _)| !interpreted(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// The repository of a v1 path, if the caller administers it and the app serves v1.
fn v1_repository(
    state: &State,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
) -> Result<(String, String), Response> {
    no_such_api(state, AppApi::V1)?;
    let project = p.get("projectKey").cloned().unwrap_or_default();
    let slug = p.get("repositorySlug").cloned().unwrap_or_default();
    let name = state.server_repository_name(&project, &slug);
    let scope = Scope::Repository(name.clone());
    access::admin(state, headers, Platform::Server, &scope)
        .map_err(|d| crate::datacenter::denied(d, &scope))?;
    let (project, slug) = name.split_once('/').unwrap_or((&name, ""));
    Ok((project.to_owned(), slug.to_owned()))
}

fn v1_index(state: &State, project: &str, slug: &str, id: &str) -> Result<usize, Response> {
    find(state, id)
        .filter(|i| {
            let c = &state.post_webhooks[*i];
            c.project_key.as_deref() == Some(project) && c.repository_slug.as_deref() == Some(slug)
        })
        .ok_or_else(|| not_found(id))
}

type PathMap = Path<HashMap<String, String>>;

async fn v1_list(s: Shared, h: HeaderMap, Path(p): PathMap) -> Response {
    let state = s.lock();
    let (project, slug) = match v1_repository(&state, &h, &p) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let values: Vec<Value> = state
        .post_webhooks
        .iter()
        .filter(|c| {
            c.project_key.as_deref() == Some(&project)
                && c.repository_slug.as_deref() == Some(&slug)
        })
        .map(render_v1)
        .collect();
    axum::Json(values).into_response()
}

async fn v1_create(s: Shared, h: HeaderMap, Path(p): PathMap, body: Bytes) -> Response {
    let mut state = s.lock();
    let (project, slug) = match v1_repository(&state, &h, &p) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let id = state.next_id();
    let config = match parse_body(&body).and_then(|b| from_v1_body(&b, id, &project, &slug)) {
        Ok(c) => c,
        Err(e) => return bad_request(&e),
    };
    let rendered = render_v1(&config);
    state.post_webhooks.push(config);
    axum::Json(rendered).into_response()
}

async fn v1_get(s: Shared, h: HeaderMap, Path(p): PathMap) -> Response {
    let state = s.lock();
    let id = p.get("id").cloned().unwrap_or_default();
    match v1_repository(&state, &h, &p).and_then(|(pr, sl)| v1_index(&state, &pr, &sl, &id)) {
        Ok(i) => axum::Json(render_v1(&state.post_webhooks[i])).into_response(),
        Err(r) => r,
    }
}

async fn v1_update(s: Shared, h: HeaderMap, Path(p): PathMap, body: Bytes) -> Response {
    let mut state = s.lock();
    let id = p.get("id").cloned().unwrap_or_default();
    let (project, slug) = match v1_repository(&state, &h, &p) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let index = match v1_index(&state, &project, &slug, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let old_id = state.post_webhooks[index].id;
    let config = match parse_body(&body).and_then(|b| from_v1_body(&b, old_id, &project, &slug)) {
        Ok(c) => c,
        Err(e) => return bad_request(&e),
    };
    let rendered = render_v1(&config);
    state.post_webhooks[index] = config;
    axum::Json(rendered).into_response()
}

async fn v1_delete(s: Shared, h: HeaderMap, Path(p): PathMap) -> Response {
    let mut state = s.lock();
    let id = p.get("id").cloned().unwrap_or_default();
    match v1_repository(&state, &h, &p).and_then(|(pr, sl)| v1_index(&state, &pr, &sl, &id)) {
        Ok(i) => {
            state.post_webhooks.remove(i);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}
