//! Bitbucket Cloud REST 2.0: repository and workspace webhooks, the event catalogue and
//! `/user`. Paths, status codes and field names follow the Cloud OpenAPI document.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bitbucket_events::catalogue::CLOUD_EVENTS;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::Sim;
use crate::access::{self, Denied};
use crate::http::{cloud_error, origin, parse_body, valid_target_url};
use crate::scopes::{self, Need};
use crate::state::{Changes, Hook, Platform, Scope, Stats, UserRefusal};

type Shared = AxumState<Arc<Sim>>;
type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/2.0/user", get(user))
        .route("/2.0/hook_events", get(subject_types))
        .route("/2.0/hook_events/{subject_type}", get(hook_events))
        .route("/2.0/repositories/{workspace}", get(list_repositories))
        .route(
            "/2.0/repositories/{workspace}/{repo_slug}/hooks",
            get(list_repository).post(create_repository),
        )
        .route(
            "/2.0/repositories/{workspace}/{repo_slug}/hooks/{uid}",
            get(get_repository)
                .put(update_repository)
                .delete(delete_repository),
        )
        .route(
            "/2.0/workspaces/{workspace}/hooks",
            get(list_workspace).post(create_workspace),
        )
        .route(
            "/2.0/workspaces/{workspace}/hooks/{uid}",
            get(get_workspace)
                .put(update_workspace)
                .delete(delete_workspace),
        )
}

fn repo(workspace: &str, slug: &str) -> Scope {
    Scope::Repository(format!("{workspace}/{slug}"))
}

async fn list_repository(
    s: Shared,
    Path((w, r)): Path<(String, String)>,
    h: HeaderMap,
    q: Params,
) -> Response {
    list(&s, &h, &q, repo(&w, &r))
}
async fn create_repository(
    s: Shared,
    Path((w, r)): Path<(String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    create(&s, &h, &b, repo(&w, &r))
}
async fn get_repository(
    s: Shared,
    Path((w, r, uid)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    get_one(&s, &h, repo(&w, &r), &uid)
}
async fn update_repository(
    s: Shared,
    Path((w, r, uid)): Path<(String, String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    update(&s, &h, &b, repo(&w, &r), &uid)
}
async fn delete_repository(
    s: Shared,
    Path((w, r, uid)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    delete(&s, &h, repo(&w, &r), &uid)
}
async fn list_workspace(s: Shared, Path(w): Path<String>, h: HeaderMap, q: Params) -> Response {
    list(&s, &h, &q, Scope::Owner(w))
}
async fn create_workspace(s: Shared, Path(w): Path<String>, h: HeaderMap, b: Bytes) -> Response {
    create(&s, &h, &b, Scope::Owner(w))
}
async fn get_workspace(
    s: Shared,
    Path((w, uid)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    get_one(&s, &h, Scope::Owner(w), &uid)
}
async fn update_workspace(
    s: Shared,
    Path((w, uid)): Path<(String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    update(&s, &h, &b, Scope::Owner(w), &uid)
}
async fn delete_workspace(
    s: Shared,
    Path((w, uid)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    delete(&s, &h, Scope::Owner(w), &uid)
}

fn denied(denied: Denied, scope: &Scope) -> Response {
    let what = match scope {
        Scope::Repository(name) => format!("Repository {name}"),
        Scope::Owner(name) => format!("Workspace {name}"),
    };
    match denied {
        Denied::Anonymous => cloud_error(StatusCode::UNAUTHORIZED, "Authentication required", None),
        Denied::InvalidCredentials => cloud_error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials: the token or password was not recognised",
            None,
        ),
        Denied::NotFound => cloud_error(StatusCode::NOT_FOUND, &format!("{what} not found"), None),
        Denied::NotAdmin => cloud_error(
            StatusCode::FORBIDDEN,
            "Your credentials lack the privileges to manage webhooks",
            Some(match scope {
                Scope::Repository(_) => "Only repository administrators can manage webhooks.",
                Scope::Owner(_) => "Only workspace owners can manage workspace webhooks.",
            }),
        ),
    }
}

/// The caller, if its credential has the scope the call needs and it administers `scope`.
fn admin(
    state: &crate::state::State,
    headers: &HeaderMap,
    scope: &Scope,
    need: Need,
) -> Result<(), Response> {
    scopes::check(state, headers, need)?;
    access::admin(state, headers, Platform::Cloud, scope)
        .map(drop)
        .map_err(|d| denied(d, scope))
}

fn same_uuid(hook: &Hook, uid: &str) -> bool {
    hook.uuid.trim_matches(|c| c == '{' || c == '}') == uid.trim_matches(|c| c == '{' || c == '}')
}

/// A hook as Cloud renders a webhook subscription. `secret` is write-only.
pub fn render(hook: &Hook, scope: &Scope, origin: &str) -> Value {
    let (subject_type, subject) = match scope {
        Scope::Repository(name) => (
            "repository",
            json!({ "type": "repository", "full_name": name,
                    "name": name.split_once('/').map(|(_, s)| s).unwrap_or(name) }),
        ),
        Scope::Owner(name) => ("workspace", json!({ "type": "workspace", "slug": name })),
    };
    let path = match scope {
        Scope::Repository(name) => format!("repositories/{name}"),
        Scope::Owner(name) => format!("workspaces/{name}"),
    };
    json!({
        "type": "webhook_subscription",
        "uuid": hook.uuid,
        "url": hook.url,
        "description": hook.title,
        "subject_type": subject_type,
        "subject": subject,
        "active": hook.active,
        "created_at": hook.created.to_string(),
        "events": hook.events,
        "secret_set": hook.secret.is_some(),
        "skip_cert_verification": hook.skip_cert_verification,
        "history_enabled": hook.history_enabled,
        "links": { "self": { "href": format!("{origin}/2.0/{path}/hooks/{}", percent_braces(&hook.uuid)) } },
    })
}

fn percent_braces(uuid: &str) -> String {
    uuid.replace('{', "%7B").replace('}', "%7D")
}

/// Cloud's page: `pagelen` (default 10, at most 100), `page`, `size`, `values`, and `next`
/// until the last page.
pub fn page(values: Vec<Value>, params: &HashMap<String, String>, url: &str) -> Value {
    let pagelen = params
        .get("pagelen")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let page = params
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let size = values.len();
    let items: Vec<Value> = values
        .into_iter()
        .skip((page - 1) * pagelen)
        .take(pagelen)
        .collect();
    let mut body = json!({ "pagelen": pagelen, "size": size, "page": page, "values": items });
    if page * pagelen < size {
        // Cloud's `next` carries the request's other parameters (a `q` filter) along.
        let mut carried: Vec<(&String, &String)> = params
            .iter()
            .filter(|(k, _)| *k != "page" && *k != "pagelen")
            .collect();
        carried.sort();
        let next = match reqwest::Url::parse(url) {
            Ok(mut next) => {
                {
                    let mut query = next.query_pairs_mut();
                    for (k, v) in carried {
                        query.append_pair(k, v);
                    }
                    query.append_pair("pagelen", &pagelen.to_string());
                    query.append_pair("page", &(page + 1).to_string());
                }
                next.to_string()
            }
            Err(_) => format!("{url}?pagelen={pagelen}&page={}", page + 1),
        };
        body["next"] = json!(next);
    }
    body
}

/// `GET /2.0/repositories/{workspace}`: the workspace's repositories the caller may see,
/// paged, narrowed by `q=project.key="KEY"` (the one filter the simulator understands;
/// others are refused as Cloud refuses an invalid filter) and `role`.
async fn list_repositories(
    s: Shared,
    Path(workspace): Path<String>,
    h: HeaderMap,
    q: Params,
) -> Response {
    let state = s.lock();
    if let Err(r) = scopes::check(&state, &h, Need::ReadRepositories) {
        return r;
    }
    let token = match access::authenticated(&state, &h) {
        Err(_) => return denied(Denied::InvalidCredentials, &Scope::Owner(workspace)),
        // Anonymous callers see public repositories only; the simulator's are private.
        Ok(None) => String::new(),
        Ok(Some(p)) => p.token,
    };
    let project = match q.get("q").map(|f| project_filter(f)) {
        None => None,
        Some(Some(key)) => Some(key),
        Some(None) => {
            return cloud_error(
                StatusCode::BAD_REQUEST,
                "Invalid filter",
                Some("The simulator understands only q=project.key=\"KEY\""),
            );
        }
    };
    let Some(repos) = state.visible_repositories(Platform::Cloud, &workspace, &token) else {
        return cloud_error(
            StatusCode::NOT_FOUND,
            &format!("No workspace with identifier '{workspace}'."),
            None,
        );
    };
    let owner_admin = state.can_read(Platform::Cloud, &Scope::Owner(workspace.clone()), &token);
    let origin = origin(&h, s.tls);
    let values: Vec<Value> = repos
        .into_iter()
        .filter(|(_, r)| {
            project
                .as_deref()
                .is_none_or(|k| r.project.as_deref() == Some(k))
        })
        .filter(|(_, r)| match q.get("role").map(String::as_str) {
            Some("admin") | Some("contributor") => owner_admin || r.admins.contains(&token),
            Some("owner") => owner_admin,
            _ => true,
        })
        .map(|(name, r)| render_repository(&name, r, &origin))
        .collect();
    let url = format!("{origin}/2.0/repositories/{workspace}");
    axum::Json(page(values, &q, &url)).into_response()
}

/// `project.key="KEY"` (spaces around `=` allowed), the project filter clients send.
fn project_filter(filter: &str) -> Option<String> {
    let (field, value) = filter.split_once('=')?;
    if field.trim() != "project.key" {
        return None;
    }
    let value = value.trim();
    let key = value.strip_prefix('"')?.strip_suffix('"')?;
    (!key.is_empty() && !key.contains('"')).then(|| key.to_owned())
}

/// A repository as Cloud renders it (the fields the spec's `repository` schema names,
/// plus `slug`, which live Cloud returns and the spec leaves out).
fn render_repository(name: &str, r: &crate::state::Repository, origin: &str) -> Value {
    let (workspace, slug) = name.split_once('/').unwrap_or((name, name));
    let project = r.project.clone().unwrap_or_else(|| "PROJ".to_owned());
    json!({
        "type": "repository",
        "uuid": format!("{{{}}}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())),
        "full_name": name,
        "name": slug,
        "slug": slug,
        "is_private": true,
        "scm": "git",
        "project": { "type": "project", "key": project, "name": project },
        "workspace": { "type": "workspace", "slug": workspace },
        "links": {
            "self": { "href": format!("{origin}/2.0/repositories/{name}") },
            "hooks": { "href": format!("{origin}/2.0/repositories/{name}/hooks") },
        },
    })
}

fn list(
    sim: &Sim,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    scope: Scope,
) -> Response {
    let state = sim.lock();
    if let Err(r) = admin(&state, headers, &scope, Need::ReadHooks) {
        return r;
    }
    let origin = origin(headers, sim.tls);
    let hooks = state
        .hooks(Platform::Cloud, &scope)
        .cloned()
        .unwrap_or_default();
    let values = hooks.iter().map(|h| render(h, &scope, &origin)).collect();
    let url = match &scope {
        Scope::Repository(name) => format!("{origin}/2.0/repositories/{name}/hooks"),
        Scope::Owner(name) => format!("{origin}/2.0/workspaces/{name}/hooks"),
    };
    axum::Json(page(values, params, &url)).into_response()
}

/// The writable fields of a subscription, as sent.
#[derive(Default)]
struct Input {
    description: Option<String>,
    url: Option<String>,
    active: Option<bool>,
    events: Option<Vec<String>>,
    /// Some(None): remove the secret.
    secret: Option<Option<String>>,
    skip_cert_verification: Option<bool>,
    history_enabled: Option<bool>,
}

fn parse_input(body: &Value) -> Result<Input, String> {
    let string = |key: &str| -> Result<Option<String>, String> {
        match body.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{key}: expected a string")),
        }
    };
    let boolean = |key: &str| -> Result<Option<bool>, String> {
        match body.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("{key}: expected a boolean")),
        }
    };
    let events = match body.get("events") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .ok_or("events: expected strings".to_owned())
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("events: expected a list".to_owned()),
    };
    let secret = match body.get("secret") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.is_empty() => Some(None),
        Some(Value::String(s)) if s.chars().count() > 128 => {
            return Err("secret: must be at most 128 characters".to_owned());
        }
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => return Err("secret: expected a string".to_owned()),
    };
    let input = Input {
        description: string("description")?,
        url: string("url")?,
        active: boolean("active")?,
        events,
        secret,
        skip_cert_verification: boolean("skip_cert_verification")?,
        history_enabled: boolean("history_enabled")?,
    };
    if let Some(url) = &input.url
        && !valid_target_url(url)
    {
        return Err(format!("url: {url:?} is not a valid http(s) URL"));
    }
    if let Some(events) = &input.events {
        if events.is_empty() {
            return Err("events: at least one event is required".to_owned());
        }
        if let Some(unknown) = events.iter().find(|e| !CLOUD_EVENTS.contains(&e.as_str())) {
            return Err(format!("events: {unknown} is not a valid event"));
        }
        let mut unique = events.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != events.len() {
            return Err("events: each event may appear only once".to_owned());
        }
    }
    Ok(input)
}

fn bad_request(detail: &str) -> Response {
    cloud_error(StatusCode::BAD_REQUEST, "Bad request", Some(detail))
}

fn create(sim: &Sim, headers: &HeaderMap, body: &[u8], scope: Scope) -> Response {
    let mut state = sim.lock();
    if let Err(r) = admin(&state, headers, &scope, Need::WriteHooks) {
        return r;
    }
    let input = match parse_body(body).and_then(|b| parse_input(&b)) {
        Ok(i) => i,
        Err(e) => return bad_request(&e),
    };
    let (Some(url), Some(events)) = (input.url, input.events) else {
        return bad_request("url and events are required");
    };
    if let Err(r) = scopes::check_events(&state, headers, &events) {
        return r;
    }
    let now = Timestamp::now();
    let hook = Hook {
        id: state.next_id(),
        uuid: format!("{{{}}}", uuid::Uuid::new_v4()),
        title: input.description.unwrap_or_default(),
        url,
        active: input.active.unwrap_or(true),
        events,
        secret: input.secret.flatten(),
        skip_cert_verification: input.skip_cert_verification.unwrap_or(false),
        history_enabled: input.history_enabled.unwrap_or(false),
        credentials: None,
        configuration: serde_json::Map::new(),
        created: now,
        updated: now,
        stats: Stats::default(),
    };
    let origin = origin(headers, sim.tls);
    let rendered = render(&hook, &scope, &origin);
    if let Some(hooks) = state.hooks_mut(Platform::Cloud, &scope) {
        hooks.push(hook);
    }
    let location = rendered["links"]["self"]["href"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(rendered),
    )
        .into_response()
}

fn not_found_hook() -> Response {
    cloud_error(StatusCode::NOT_FOUND, "Webhook not found", None)
}

fn get_one(sim: &Sim, headers: &HeaderMap, scope: Scope, uid: &str) -> Response {
    let state = sim.lock();
    if let Err(r) = admin(&state, headers, &scope, Need::ReadHooks) {
        return r;
    }
    let origin = origin(headers, sim.tls);
    match state
        .hooks(Platform::Cloud, &scope)
        .and_then(|hooks| hooks.iter().find(|h| same_uuid(h, uid)))
    {
        Some(hook) => axum::Json(render(hook, &scope, &origin)).into_response(),
        None => not_found_hook(),
    }
}

fn update(sim: &Sim, headers: &HeaderMap, body: &[u8], scope: Scope, uid: &str) -> Response {
    let mut state = sim.lock();
    if let Err(r) = admin(&state, headers, &scope, Need::WriteHooks) {
        return r;
    }
    let input = match parse_body(body).and_then(|b| parse_input(&b)) {
        Ok(i) => i,
        Err(e) => return bad_request(&e),
    };
    if let Some(events) = &input.events
        && let Err(r) = scopes::check_events(&state, headers, events)
    {
        return r;
    }
    let origin = origin(headers, sim.tls);
    let Some(hook) = state
        .hooks_mut(Platform::Cloud, &scope)
        .and_then(|hooks| hooks.iter_mut().find(|h| same_uuid(h, uid)))
    else {
        return not_found_hook();
    };
    if let Some(v) = input.history_enabled {
        hook.history_enabled = v;
    }
    // Omitting `secret` keeps it; null or "" removes it.
    hook.apply(Changes {
        title: input.description,
        url: input.url,
        active: input.active,
        events: input.events,
        secret: input.secret,
        skip_cert_verification: input.skip_cert_verification,
    });
    axum::Json(render(hook, &scope, &origin)).into_response()
}

fn delete(sim: &Sim, headers: &HeaderMap, scope: Scope, uid: &str) -> Response {
    let mut state = sim.lock();
    if let Err(r) = admin(&state, headers, &scope, Need::DeleteHooks) {
        return r;
    }
    let Some(hooks) = state.hooks_mut(Platform::Cloud, &scope) else {
        return not_found_hook();
    };
    let before = hooks.len();
    hooks.retain(|h| !same_uuid(h, uid));
    if hooks.len() == before {
        return not_found_hook();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /2.0/user`: the account behind the credential (the operator's cheap check).
async fn user(s: Shared, headers: HeaderMap) -> Response {
    let state = s.lock();
    if let Err(r) = scopes::check(&state, &headers, Need::Account) {
        if state.variants.cloud_user_refusal == UserRefusal::Plain401 {
            // No scope detail: the same answer as for a token that is not valid at all.
            return cloud_error(
                StatusCode::UNAUTHORIZED,
                "Token is invalid, expired, or not supported for this endpoint.",
                None,
            );
        }
        return r;
    }
    match access::authenticated(&state, &headers) {
        Ok(Some(p)) => axum::Json(json!({
            "type": "user",
            "username": p.user,
            "display_name": p.user,
            "uuid": format!("{{{}}}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, p.user.as_bytes())),
        }))
        .into_response(),
        Ok(None) => denied(Denied::Anonymous, &Scope::Owner(String::new())),
        Err(d) => denied(d, &Scope::Owner(String::new())),
    }
}

/// `GET /2.0/hook_events`: where each subject type's events are listed. No auth needed.
async fn subject_types(s: Shared, headers: HeaderMap) -> Response {
    let origin = origin(&headers, s.tls);
    axum::Json(json!({
        "repository": { "events": { "href": format!("{origin}/2.0/hook_events/repository") } },
        "workspace": { "events": { "href": format!("{origin}/2.0/hook_events/workspace") } },
    }))
    .into_response()
}

/// `GET /2.0/hook_events/{subject_type}`: the event catalogue, paginated.
async fn hook_events(
    s: Shared,
    Path(subject): Path<String>,
    headers: HeaderMap,
    q: Params,
) -> Response {
    if subject != "repository" && subject != "workspace" {
        return cloud_error(
            StatusCode::NOT_FOUND,
            &format!("{subject} is not a valid subject type"),
            Some("Valid subject types are repository and workspace."),
        );
    }
    let values = CLOUD_EVENTS
        .iter()
        .map(|event| {
            let (category, action) = event.split_once(':').unwrap_or((event, event));
            json!({
                "event": event,
                "category": category,
                "label": action.replace('_', " "),
                "description": format!("{category} {}", action.replace('_', " ")),
            })
        })
        .collect();
    let url = format!("{}/2.0/hook_events/{subject}", origin(&headers, s.tls));
    axum::Json(page(values, &q, &url)).into_response()
}
