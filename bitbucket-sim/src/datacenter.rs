//! Bitbucket Data Center built-in webhooks (`/rest/api/latest`): repository and project
//! webhooks, test deliveries, the latest invocation and delivery statistics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bitbucket_events::catalogue::DATA_CENTER_EVENTS;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::Sim;
use crate::access::{self, Denied};
use crate::delivery::Outgoing;
use crate::http::{dc_error, parse_body, valid_target_url};
use crate::state::{
    Changes, Hook, Invocation, Outcome, Platform, Scope, State, StatisticsShape, Stats,
    WriteConfiguration,
};

type Shared = AxumState<Arc<Sim>>;
type Params = Query<HashMap<String, String>>;

const REPO: &str = "/rest/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks";
const PROJECT: &str = "/rest/api/latest/projects/{projectKey}/webhooks";

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/rest/api/latest/application-properties",
            get(application_properties),
        )
        .route("/rest/api/latest/projects", get(list_projects))
        .route(
            "/rest/api/latest/projects/{projectKey}/repos",
            get(list_repositories),
        )
        .route(REPO, get(list_repo).post(create_repo))
        .route(&format!("{REPO}/test"), post(test_repo))
        .route(&format!("{REPO}/search"), get(search_repo))
        .route(
            &format!("{REPO}/{{webhookId}}"),
            get(get_repo).put(update_repo).delete(delete_repo),
        )
        .route(&format!("{REPO}/{{webhookId}}/latest"), get(latest_repo))
        .route(
            &format!("{REPO}/{{webhookId}}/statistics"),
            get(statistics_repo),
        )
        .route(
            &format!("{REPO}/{{webhookId}}/statistics/summary"),
            get(summary_repo),
        )
        .route(PROJECT, get(list_project).post(create_project))
        .route(&format!("{PROJECT}/test"), post(test_project))
        .route(
            &format!("{PROJECT}/{{webhookId}}"),
            get(get_project).put(update_project).delete(delete_project),
        )
        .route(
            &format!("{PROJECT}/{{webhookId}}/latest"),
            get(latest_project),
        )
        .route(
            &format!("{PROJECT}/{{webhookId}}/statistics"),
            get(statistics_project),
        )
        .route(
            &format!("{PROJECT}/{{webhookId}}/statistics/summary"),
            get(summary_project),
        )
}

/// Which operation a request is, so the repository and project routes share one body.
enum Op<'a> {
    List(&'a HashMap<String, String>),
    /// Repository and inherited project webhooks (`?scopeType=repository|project`).
    Search(&'a HashMap<String, String>),
    Create(&'a [u8]),
    Get(&'a str, &'a HashMap<String, String>),
    Update(&'a str, &'a [u8]),
    Delete(&'a str),
    Latest(&'a str, &'a HashMap<String, String>),
    Statistics(&'a str, &'a HashMap<String, String>),
}

fn repo_scope(sim: &Sim, project: &str, slug: &str) -> Scope {
    Scope::Repository(sim.lock().server_repository_name(project, slug))
}

macro_rules! repo_handlers {
    ($($name:ident => |$q:ident, $b:ident, $id:ident| $op:expr;)*) => {$(
        #[allow(unused_variables)]
        async fn $name(
            s: Shared,
            Path(p): Path<HashMap<String, String>>,
            h: HeaderMap,
            $q: Params,
            $b: Bytes,
        ) -> Response {
            let project = p.get("projectKey").cloned().unwrap_or_default();
            let scope = match p.get("repositorySlug") {
                Some(slug) => repo_scope(&s, &project, slug),
                None => Scope::Owner(project.to_ascii_uppercase()),
            };
            let $id = p.get("webhookId").cloned().unwrap_or_default();
            handle(&s, &h, scope, $op).await
        }
    )*};
}

repo_handlers! {
    list_repo => |q, b, id| Op::List(&q);
    search_repo => |q, b, id| Op::Search(&q);
    create_repo => |q, b, id| Op::Create(&b);
    get_repo => |q, b, id| Op::Get(&id, &q);
    update_repo => |q, b, id| Op::Update(&id, &b);
    delete_repo => |q, b, id| Op::Delete(&id);
    latest_repo => |q, b, id| Op::Latest(&id, &q);
    statistics_repo => |q, b, id| Op::Statistics(&id, &q);
    summary_repo => |q, b, id| Op::Statistics(&id, &q);
    list_project => |q, b, id| Op::List(&q);
    create_project => |q, b, id| Op::Create(&b);
    get_project => |q, b, id| Op::Get(&id, &q);
    update_project => |q, b, id| Op::Update(&id, &b);
    delete_project => |q, b, id| Op::Delete(&id);
    latest_project => |q, b, id| Op::Latest(&id, &q);
    statistics_project => |q, b, id| Op::Statistics(&id, &q);
    summary_project => |q, b, id| Op::Statistics(&id, &q);
}

pub(crate) fn denied(d: Denied, scope: &Scope) -> Response {
    match d {
        Denied::NotFound => match scope {
            Scope::Repository(name) => dc_error(
                StatusCode::NOT_FOUND,
                &format!("Repository {name} does not exist."),
                "com.atlassian.bitbucket.repository.NoSuchRepositoryException",
            ),
            Scope::Owner(key) => dc_error(
                StatusCode::NOT_FOUND,
                &format!("Project {key} does not exist."),
                "com.atlassian.bitbucket.project.NoSuchProjectException",
            ),
        },
        Denied::InvalidCredentials => dc_error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed. Please check your credentials and try again.",
            "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
        ),
        // Data Center answers 401, not 403, for missing permissions.
        Denied::Anonymous | Denied::NotAdmin => dc_error(
            StatusCode::UNAUTHORIZED,
            &match scope {
                Scope::Repository(name) => {
                    format!(
                        "You are not permitted to access this resource: REPO_ADMIN on {name} is required"
                    )
                }
                Scope::Owner(key) => {
                    format!(
                        "You are not permitted to access this resource: PROJECT_ADMIN on {key} is required"
                    )
                }
            },
            "com.atlassian.bitbucket.AuthorisationException",
        ),
    }
}

fn millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn render_invocation(i: &Invocation, scope: &Scope) -> Value {
    json!({
        "id": i.id,
        "event": i.event,
        "eventScope": { "type": match scope { Scope::Repository(_) => "repository", Scope::Owner(_) => "project" }, "id": scope.name() },
        "duration": (i.finish.as_millisecond() - i.start.as_millisecond()),
        "start": millis(i.start),
        "finish": millis(i.finish),
        "request": { "url": i.url, "method": "POST" },
        "result": { "outcome": i.outcome, "description": i.description },
    })
}

/// A hook's statistics in the shape the variant asks for: one summary (default), or a map
/// from each event the hook delivered to that event's summary (`PUT /_sim/variants
/// {"dcStatistics":"byEvent"}`; both shapes are reported, see docs/bitbucket-api.md).
pub fn statistics(
    stats: &Stats,
    scope: &Scope,
    event: Option<&str>,
    shape: StatisticsShape,
) -> Value {
    match shape {
        StatisticsShape::Summary => render_statistics(stats, scope, event),
        StatisticsShape::ByEvent => {
            let mut events: Vec<&str> = stats
                .invocations
                .iter()
                .map(|i| i.event.as_str())
                .filter(|e| event.is_none_or(|wanted| wanted == *e))
                .collect();
            events.sort_unstable();
            events.dedup();
            let map: serde_json::Map<String, Value> = events
                .into_iter()
                .map(|e| {
                    let mut one = Stats::default();
                    for i in stats.invocations.iter().filter(|i| i.event == e) {
                        one.record(i.clone());
                    }
                    (e.to_owned(), render_statistics(&one, scope, Some(e)))
                })
                .collect();
            Value::Object(map)
        }
    }
}

/// The live statistics shape: last success / failure / error and counts in the window.
pub fn render_statistics(stats: &Stats, scope: &Scope, event: Option<&str>) -> Value {
    let last = |o| {
        stats
            .last(Some(o), event)
            .map(|i| render_invocation(i, scope))
    };
    let now = Timestamp::now();
    let start = stats.window_start.unwrap_or(now);
    json!({
        "lastSuccess": last(Outcome::Success),
        "lastFailure": last(Outcome::Failure),
        "lastError": last(Outcome::Error),
        "counts": {
            "successes": stats.successes,
            "failures": stats.failures,
            "errors": stats.errors,
            "window": { "start": millis(start), "duration": (now.as_millisecond() - start.as_millisecond()) },
        },
    })
}

/// A create's or update's answer: servers were seen echoing `"configuration": {}`
/// although the secret is stored (`/_sim/variants` `dcWriteConfiguration: empty`).
fn write_answer(state: &State, mut rendered: Value) -> Value {
    if state.variants.dc_write_configuration == WriteConfiguration::Empty {
        rendered["configuration"] = json!({});
    }
    rendered
}

/// A webhook as Data Center renders it. Live servers return `configuration.secret` in clear.
/// `statistics`: the shape to add them in, when asked.
pub fn render(hook: &Hook, scope: &Scope, statistics: Option<StatisticsShape>) -> Value {
    let mut configuration = hook.configuration.clone();
    if let Some(secret) = &hook.secret {
        configuration.insert("secret".into(), json!(secret));
    }
    let mut body = json!({
        "id": hook.id,
        "name": hook.title,
        "createdDate": millis(hook.created),
        "updatedDate": millis(hook.updated),
        "events": hook.events,
        "configuration": configuration,
        "url": hook.url,
        "active": hook.active,
        "scopeType": match scope { Scope::Repository(_) => "repository", Scope::Owner(_) => "project" },
        "sslVerificationRequired": !hook.skip_cert_verification,
    });
    if let Some((username, _)) = &hook.credentials {
        body["credentials"] = json!({ "username": username });
    }
    if let Some(shape) = statistics {
        body["statistics"] = self::statistics(&hook.stats, scope, None, shape);
    }
    body
}

/// `GET /rest/api/latest/projects/{projectKey}/repos`: the project's repositories, paged.
/// The spec asks PROJECT_READ; the simulator grants it to the project's admins and to
/// anyone with a permission on one of its repositories (who then sees those), and
/// answers 401, as Data Center does for missing permissions, to everyone else.
async fn list_repositories(
    s: Shared,
    Path(key): Path<String>,
    h: HeaderMap,
    q: Params,
) -> Response {
    let state = s.lock();
    let scope = Scope::Owner(key.to_ascii_uppercase());
    let token = match access::authenticated(&state, &h) {
        Err(d) => return denied(d, &scope),
        Ok(None) => return denied(Denied::Anonymous, &scope),
        Ok(Some(p)) => p.token,
    };
    let Some(repos) = state.visible_repositories(Platform::Server, scope.name(), &token) else {
        return denied(Denied::NotFound, &scope);
    };
    let owner_admin = state.can_read(Platform::Server, &scope, &token);
    if repos.is_empty() && !owner_admin {
        return dc_error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "You are not permitted to access this resource: PROJECT_READ on {} is required",
                scope.name()
            ),
            "com.atlassian.bitbucket.AuthorisationException",
        );
    }
    let values = repos
        .into_iter()
        .map(|(name, r)| {
            let (project, slug) = name.split_once('/').unwrap_or((&name, &name));
            json!({
                "slug": slug,
                "id": r.id,
                "name": slug,
                "hierarchyId": format!("{:020x}", r.id),
                "scmId": "git",
                "state": "AVAILABLE",
                "statusMessage": "Available",
                "forkable": true,
                "public": false,
                "archived": false,
                "project": { "key": project, "name": project, "public": false, "type": "NORMAL" },
            })
        })
        .collect();
    axum::Json(page(values, &q)).into_response()
}

/// `GET /rest/api/latest/projects`: "only projects for which the authenticated user has
/// the PROJECT_VIEW permission" (Data Center 9.4 OpenAPI), paged, by key. The simulator
/// counts as viewers the project's admins and anyone who may see one of its
/// repositories; an anonymous request gets 401 like every other call here.
async fn list_projects(s: Shared, h: HeaderMap, q: Params) -> Response {
    let state = s.lock();
    let everything = Scope::Owner(String::new());
    let token = match access::authenticated(&state, &h) {
        Err(d) => return denied(d, &everything),
        Ok(None) => return denied(Denied::Anonymous, &everything),
        Ok(Some(p)) => p.token,
    };
    let mut keys: Vec<String> = state
        .repositories
        .keys()
        .filter(|(p, _)| *p == Platform::Server)
        .filter_map(|(_, name)| name.split_once('/').map(|(o, _)| o.to_ascii_uppercase()))
        .chain(
            state
                .owners
                .keys()
                .filter(|(p, _)| *p == Platform::Server)
                .map(|(_, key)| key.to_ascii_uppercase()),
        )
        .collect();
    keys.sort();
    keys.dedup();
    let values = keys
        .into_iter()
        .filter(|key| {
            state.can_read(Platform::Server, &Scope::Owner(key.clone()), &token)
                || state
                    .visible_repositories(Platform::Server, key, &token)
                    .is_some_and(|r| !r.is_empty())
        })
        .enumerate()
        .map(|(i, key)| {
            json!({ "key": key, "id": i + 1, "name": key, "public": false, "type": "NORMAL" })
        })
        .collect();
    axum::Json(page(values, &q)).into_response()
}

/// Data Center's page: `start`/`limit` (default 25), `size`, `isLastPage`, `nextPageStart`.
pub fn page(values: Vec<Value>, params: &HashMap<String, String>) -> Value {
    let start = params
        .get("start")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 1000);
    let total = values.len();
    let items: Vec<Value> = values.into_iter().skip(start).take(limit).collect();
    let last = start + items.len() >= total;
    let mut body = json!({
        "size": items.len(), "limit": limit, "isLastPage": last, "start": start, "values": items,
    });
    if !last {
        body["nextPageStart"] = json!(start + limit);
    }
    body
}

pub(crate) fn bad_request(message: &str) -> Response {
    dc_error(
        StatusCode::BAD_REQUEST,
        message,
        "com.atlassian.bitbucket.validation.ArgumentValidationException",
    )
}

struct Input {
    name: Option<String>,
    url: Option<String>,
    active: Option<bool>,
    events: Option<Vec<String>>,
    /// Some(None): `configuration` sent without a secret.
    secret: Option<Option<String>>,
    /// The other `configuration` keys sent (none when it was not sent).
    configuration: serde_json::Map<String, Value>,
    ssl_verification_required: Option<bool>,
    credentials: Option<Option<(String, String)>>,
}

/// Reads a webhook body. `Err(Ok(msg))` is a 400, `Err(Err(msg))` a 500 (an empty secret
/// makes live servers fail that way).
fn parse_input(body: &Value) -> Result<Input, Result<String, String>> {
    let string = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Ok(format!("{key}: expected a string"))),
    };
    let boolean = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Ok(format!("{key}: expected a boolean"))),
    };
    let events = match body.get("events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .ok_or(Ok("events: expected strings".to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(Ok("events: expected a list".to_owned())),
    };
    let secret = match body.get("configuration") {
        None | Some(Value::Null) => None,
        Some(Value::Object(config)) => match config.get("secret") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(Err(
                    "java.lang.IllegalArgumentException: secret must not be empty".to_owned(),
                ));
            }
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => return Err(Ok("configuration.secret: expected a string".to_owned())),
        },
        Some(_) => return Err(Ok("configuration: expected an object".to_owned())),
    };
    let mut configuration = body
        .get("configuration")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    configuration.remove("secret");
    let credentials = match body.get("credentials") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(c) => Some(Some((
            c.get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            c.get("password")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ))),
    };
    let input = Input {
        name: string("name")?,
        url: string("url")?,
        active: boolean("active")?,
        events,
        secret,
        configuration,
        ssl_verification_required: boolean("sslVerificationRequired")?,
        credentials,
    };
    if let Some(url) = &input.url
        && !valid_target_url(url)
    {
        return Err(Ok(format!("url: {url} is not a valid URL")));
    }
    if let Some(events) = &input.events {
        if events.is_empty() {
            return Err(Ok("events: at least one event is required".to_owned()));
        }
        let unknown: Vec<&str> = events
            .iter()
            .map(String::as_str)
            .filter(|e| !DATA_CENTER_EVENTS.contains(e))
            .collect();
        if !unknown.is_empty() {
            return Err(Ok(format!("Invalid event(s): {}", unknown.join(", "))));
        }
    }
    if input.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(Ok("name: the webhook name must not be blank".to_owned()));
    }
    Ok(input)
}

fn input_error(e: Result<String, String>) -> Response {
    match e {
        Ok(message) => bad_request(&message),
        Err(message) => dc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &message,
            "java.lang.IllegalArgumentException",
        ),
    }
}

fn no_such_webhook(id: &str) -> Response {
    dc_error(
        StatusCode::NOT_FOUND,
        &format!("No webhook with id {id} exists."),
        "com.atlassian.bitbucket.webhook.NoSuchWebhookException",
    )
}

async fn handle(sim: &Sim, headers: &HeaderMap, scope: Scope, op: Op<'_>) -> Response {
    let mut state = sim.lock();
    if let Err(d) = access::admin(&state, headers, Platform::Server, &scope) {
        return denied(d, &scope);
    }
    let shape = state.variants.dc_statistics;
    let with_statistics = |q: &HashMap<String, String>| {
        q.get("statistics")
            .is_some_and(|v| v == "true")
            .then_some(shape)
    };
    let find = |hooks: Option<&Vec<Hook>>, id: &str| -> Option<Hook> {
        let id: u64 = id.parse().ok()?;
        hooks?.iter().find(|h| h.id == id).cloned()
    };
    match op {
        Op::List(q) => {
            let hooks = state
                .hooks(Platform::Server, &scope)
                .cloned()
                .unwrap_or_default();
            let event = q.get("event");
            let values = hooks
                .iter()
                .filter(|h| event.is_none_or(|e| h.events.contains(e)))
                .map(|h| render(h, &scope, with_statistics(q)))
                .collect();
            axum::Json(page(values, q)).into_response()
        }
        Op::Search(q) => {
            let owner = Scope::Owner(
                scope
                    .name()
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
            let wanted = q.get("scopeType").map(String::as_str);
            let event = q.get("event");
            let mut values = Vec::new();
            for (kind, level) in [("repository", &scope), ("project", &owner)] {
                if wanted.is_some_and(|w| !w.eq_ignore_ascii_case(kind)) {
                    continue;
                }
                for h in state.hooks(Platform::Server, level).into_iter().flatten() {
                    if event.is_none_or(|e| h.events.contains(e)) {
                        values.push(render(h, level, with_statistics(q)));
                    }
                }
            }
            axum::Json(page(values, q)).into_response()
        }
        Op::Create(body) => {
            let input = match parse_body(body).map_err(Ok).and_then(|b| parse_input(&b)) {
                Ok(i) => i,
                Err(e) => return input_error(e),
            };
            let (Some(name), Some(url), Some(events)) = (input.name, input.url, input.events)
            else {
                return bad_request("name, url and events are required");
            };
            let now = Timestamp::now();
            let hook = Hook {
                id: state.next_id(),
                uuid: String::new(),
                title: name,
                url,
                active: input.active.unwrap_or(true),
                events,
                secret: input.secret.flatten(),
                skip_cert_verification: !input.ssl_verification_required.unwrap_or(true),
                history_enabled: false,
                credentials: input.credentials.flatten(),
                configuration: input.configuration,
                created: now,
                updated: now,
                stats: Stats::default(),
            };
            let rendered = write_answer(&state, render(&hook, &scope, None));
            if let Some(hooks) = state.hooks_mut(Platform::Server, &scope) {
                hooks.push(hook);
            }
            // The 9.2 and 9.4 specs document 200; 9.x servers were seen answering 201.
            let status =
                StatusCode::from_u16(state.variants.dc_create_status).unwrap_or(StatusCode::OK);
            (status, axum::Json(rendered)).into_response()
        }
        Op::Get(id, q) => match find(state.hooks(Platform::Server, &scope), id) {
            Some(h) => axum::Json(render(&h, &scope, with_statistics(q))).into_response(),
            None => no_such_webhook(id),
        },
        Op::Update(id, body) => {
            let input = match parse_body(body).map_err(Ok).and_then(|b| parse_input(&b)) {
                Ok(i) => i,
                Err(e) => return input_error(e),
            };
            let parsed: Option<u64> = id.parse().ok();
            let Some(hook) = state
                .hooks_mut(Platform::Server, &scope)
                .and_then(|hooks| hooks.iter_mut().find(|h| Some(h.id) == parsed))
            else {
                return no_such_webhook(id);
            };
            // PUT replaces the webhook: an optional field left out is cleared or takes its
            // default (live servers and the Atlassian webhooks plugin: "Replaces a
            // registered webhook"). A hook cannot exist without name, url and events, and
            // the spec documents no 400 for PUT: those keep their value when left out.
            // Delivery credentials sent back without their password keep the stored one
            // (the password is never returned, so no client could send it).
            let name = input.name.unwrap_or_else(|| hook.title.clone());
            let url = input.url.unwrap_or_else(|| hook.url.clone());
            let events = input.events.unwrap_or_else(|| hook.events.clone());
            hook.configuration = input.configuration;
            hook.credentials = input.credentials.flatten().map(|(user, password)| {
                match (&hook.credentials, password.is_empty()) {
                    (Some((old_user, old_password)), true) if *old_user == user => {
                        (user, old_password.clone())
                    }
                    _ => (user, password),
                }
            });
            hook.apply(Changes {
                title: Some(name),
                url: Some(url),
                active: Some(input.active.unwrap_or(true)),
                events: Some(events),
                secret: Some(input.secret.flatten()),
                skip_cert_verification: Some(!input.ssl_verification_required.unwrap_or(true)),
            });
            let rendered = render(hook, &scope, None);
            axum::Json(write_answer(&state, rendered)).into_response()
        }
        Op::Delete(id) => {
            let parsed: Option<u64> = id.parse().ok();
            let Some(hooks) = state.hooks_mut(Platform::Server, &scope) else {
                return no_such_webhook(id);
            };
            let before = hooks.len();
            hooks.retain(|h| Some(h.id) != parsed);
            if hooks.len() == before {
                return no_such_webhook(id);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Op::Latest(id, q) => {
            let Some(hook) = find(state.hooks(Platform::Server, &scope), id) else {
                return no_such_webhook(id);
            };
            let outcome = match q.get("outcome").map(String::as_str) {
                Some("SUCCESS") => Some(Outcome::Success),
                Some("FAILURE") => Some(Outcome::Failure),
                Some("ERROR") => Some(Outcome::Error),
                Some(other) => {
                    return bad_request(&format!(
                        "outcome: {other} is not SUCCESS, FAILURE or ERROR"
                    ));
                }
                None => None,
            };
            match hook.stats.last(outcome, q.get("event").map(String::as_str)) {
                Some(i) => axum::Json(render_invocation(i, &scope)).into_response(),
                // No invocation yet: 204, not 404.
                None => StatusCode::NO_CONTENT.into_response(),
            }
        }
        Op::Statistics(id, q) => match find(state.hooks(Platform::Server, &scope), id) {
            Some(h) => axum::Json(statistics(
                &h.stats,
                &scope,
                q.get("event").map(String::as_str),
                shape,
            ))
            .into_response(),
            None => no_such_webhook(id),
        },
    }
}

async fn test_repo(
    s: Shared,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    q: Params,
) -> Response {
    let project = p.get("projectKey").cloned().unwrap_or_default();
    let slug = p.get("repositorySlug").cloned().unwrap_or_default();
    let scope = repo_scope(&s, &project, &slug);
    test(&s, &h, scope, &q).await
}

async fn test_project(s: Shared, Path(project): Path<String>, h: HeaderMap, q: Params) -> Response {
    test(&s, &h, Scope::Owner(project.to_ascii_uppercase()), &q).await
}

/// `POST .../webhooks/test`: one `diagnostics:ping` to `url` (or the webhook's URL),
/// signed with the webhook's secret when `webhookId` names one; the target's answer.
async fn test(
    sim: &Sim,
    headers: &HeaderMap,
    scope: Scope,
    q: &HashMap<String, String>,
) -> Response {
    let (url, secret, verify) = {
        let state = sim.lock();
        if let Err(d) = access::admin(&state, headers, Platform::Server, &scope) {
            return denied(d, &scope);
        }
        let hook = match q.get("webhookId") {
            Some(id) => {
                let parsed: Option<u64> = id.parse().ok();
                match state
                    .hooks(Platform::Server, &scope)
                    .and_then(|hs| hs.iter().find(|h| Some(h.id) == parsed))
                {
                    Some(h) => Some(h.clone()),
                    None => return no_such_webhook(id),
                }
            }
            None => None,
        };
        // Live 9.x servers fail with a 500 when `url` is missing, even with a webhookId.
        let Some(url) = q.get("url").cloned() else {
            return dc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "java.lang.NullPointerException: url",
                "java.lang.NullPointerException",
            );
        };
        if !valid_target_url(&url) {
            return bad_request(&format!("url: {url} is not a valid URL"));
        }
        let verify = q
            .get("sslVerificationRequired")
            .map(|v| v != "false")
            .unwrap_or_else(|| hook.as_ref().is_none_or(|h| !h.skip_cert_verification));
        (url, hook.and_then(|h| h.secret), verify)
    };
    let outgoing = Outgoing::data_center(
        bitbucket_events::payload::PING_EVENT,
        &json!({ "test": true }),
        secret.as_deref(),
    );
    let request = json!({ "url": url, "method": "POST", "headers": outgoing.header_map_json(), "body": outgoing.body_text() });
    let attempt = sim.deliverer.send(&url, &outgoing, verify).await;
    let body = match attempt.status {
        Some(status) => json!({
            "request": request,
            "response": { "status": status, "headers": attempt.response_headers, "body": attempt.response_body },
        }),
        None => json!({ "request": request, "exception": { "message": attempt.error } }),
    };
    axum::Json(body).into_response()
}

/// `GET /rest/api/latest/application-properties`: public, but authenticated callers get
/// `X-AUSERNAME` (the operator's cheap credential check) and bad credentials a 401.
async fn application_properties(s: Shared, headers: HeaderMap) -> Response {
    let state = s.lock();
    let user = match access::authenticated(&state, &headers) {
        Ok(user) => user,
        Err(d) => return denied(d, &Scope::Owner(String::new())),
    };
    let mut response = axum::Json(json!({
        "version": "9.4.0", "buildNumber": "9004000", "buildDate": "1730000000000", "displayName": "Bitbucket",
    }))
    .into_response();
    if let Some(p) = user
        && let Ok(v) = HeaderValue::from_str(&p.user)
    {
        response.headers_mut().insert("X-AUSERNAME", v);
    }
    response
}
