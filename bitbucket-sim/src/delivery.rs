//! Real deliveries: the requests Bitbucket sends to webhook URLs, with each backend's
//! headers, payload and signature, and the outcome as Data Center's statistics record it.

use std::time::Duration;

use bitbucket_events::Backend;
use bitbucket_events::catalogue::{
    data_center_event_for, post_webhooks_event_key, post_webhooks_type_for,
};
use bitbucket_events::payload::Example;
use bitbucket_events::signature;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Sim;
use crate::state::{Hook, Invocation, Outcome, Platform, PwConfig, Scope};

/// Bitbucket gives a target 10 seconds.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One request to a webhook URL.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    fn new(body: &Value, mut headers: Vec<(String, String)>, secret: Option<&str>) -> Outgoing {
        let body = serde_json::to_vec(body).unwrap_or_default();
        headers.push(("Content-Type".into(), "application/json".into()));
        if let Some(secret) = secret {
            headers.push((
                signature::HEADER.into(),
                signature::sign(secret.as_bytes(), &body),
            ));
        }
        Outgoing { headers, body }
    }

    /// Cloud: X-Event-Key, X-Hook-UUID, X-Request-UUID, X-Attempt-Number, X-Event-Time.
    pub fn cloud(event: &str, hook_uuid: &str, body: &Value, secret: Option<&str>) -> Outgoing {
        let headers = vec![
            ("X-Event-Key".into(), event.into()),
            (
                "X-Hook-UUID".into(),
                hook_uuid.trim_matches(|c| c == '{' || c == '}').into(),
            ),
            ("X-Request-UUID".into(), uuid::Uuid::new_v4().to_string()),
            ("X-Attempt-Number".into(), "1".into()),
            (
                "X-Event-Time".into(),
                Timestamp::now()
                    .strftime("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            ),
            ("User-Agent".into(), "Bitbucket-Webhooks/2.0".into()),
        ];
        Outgoing::new(body, headers, secret)
    }

    /// Data Center: X-Event-Key, X-Request-Id.
    pub fn data_center(event: &str, body: &Value, secret: Option<&str>) -> Outgoing {
        let headers = vec![
            ("X-Event-Key".into(), event.into()),
            ("X-Request-Id".into(), uuid::Uuid::new_v4().to_string()),
            (
                "User-Agent".into(),
                "Atlassian HttpClient 4.2.0 / Bitbucket-9.4.0 (9004000) / Default".into(),
            ),
        ];
        Outgoing::new(body, headers, secret)
    }

    /// Post Webhooks: its own X-Event-Key map, optional basic auth, no signature.
    pub fn post_webhooks(event_type: &str, body: &Value, config: &PwConfig) -> Outgoing {
        let mut headers = vec![
            (
                "X-Event-Key".into(),
                post_webhooks_event_key(event_type)
                    .unwrap_or("unknown")
                    .into(),
            ),
            ("User-Agent".into(), "Bitbucket-Post-Webhooks".into()),
        ];
        if config.enable_authentication
            && let (Some(user), Some(password)) = (&config.auth_username, &config.auth_password)
        {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("Authorization".into(), format!("Basic {token}")));
        }
        Outgoing::new(body, headers, None)
    }

    fn set_header(&mut self, name: &str, value: String) {
        if let Some(h) = self.headers.iter_mut().find(|(n, _)| n == name) {
            h.1 = value;
        }
    }

    pub fn header_map_json(&self) -> Value {
        Value::Object(
            self.headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        )
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the target did with one request.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response_headers: Value,
    pub response_body: String,
    pub start: Timestamp,
    pub finish: Timestamp,
}

impl Attempt {
    pub fn outcome(&self) -> Outcome {
        match self.status {
            Some(s) if (200..300).contains(&s) => Outcome::Success,
            Some(_) => Outcome::Failure,
            None => Outcome::Error,
        }
    }

    /// Data Center's description of the result.
    pub fn description(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) => format!("{s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no response".to_owned(),
        }
    }
}

/// The HTTP clients deliveries go out with: one that verifies certificates against the
/// system's roots, one for hooks that skip verification.
pub struct Deliverer {
    verifying: reqwest::Client,
    insecure: reqwest::Client,
}

impl Deliverer {
    pub fn new() -> Result<Deliverer, String> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(insecure)
                .build()
                .map_err(|e| format!("cannot build the delivery client: {e}"))
        };
        Ok(Deliverer {
            verifying: build(false)?,
            insecure: build(true)?,
        })
    }

    pub async fn send(&self, url: &str, outgoing: &Outgoing, verify_tls: bool) -> Attempt {
        let client = if verify_tls {
            &self.verifying
        } else {
            &self.insecure
        };
        let mut request = client.post(url).body(outgoing.body.clone());
        for (name, value) in &outgoing.headers {
            request = request.header(name, value);
        }
        let start = Timestamp::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = Value::Object(
                    response
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                        .collect(),
                );
                let body = response.text().await.unwrap_or_default();
                Attempt {
                    status: Some(status),
                    error: None,
                    response_headers: headers,
                    response_body: body,
                    start,
                    finish: Timestamp::now(),
                }
            }
            Err(e) => Attempt {
                status: None,
                error: Some(error_chain(&e)),
                response_headers: Value::Null,
                response_body: String::new(),
                start,
                finish: Timestamp::now(),
            },
        }
    }
}

/// reqwest's top-level error says little ("error sending request"); the cause says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// `POST /_sim/events`.
#[derive(Deserialize)]
pub struct EmitRequest {
    pub repository: String,
    pub event: String,
    /// Cloud, DataCenter or PostWebhooks; needed only when a name exists on both platforms.
    #[serde(default)]
    pub flavor: Option<String>,
}

/// One delivery's outcome, as `POST /_sim/events` reports it.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub flavor: &'static str,
    pub hook_id: String,
    pub url: String,
    pub event: String,
    pub attempts: u32,
    pub status_code: Option<u16>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

enum Target {
    Cloud { hook: Hook },
    DataCenter { scope: Scope, hook: Hook },
    PostWebhooks { config: PwConfig },
}

fn platform_of(flavor: &str) -> Option<Platform> {
    match flavor {
        "Cloud" => Some(Platform::Cloud),
        "DataCenter" | "PostWebhooks" => Some(Platform::Server),
        _ => None,
    }
}

/// Emits `event` on a repository: every matching active hook gets a real request.
pub async fn emit(sim: &Sim, req: &EmitRequest) -> Result<Vec<Report>, String> {
    let (platform, name, targets, dc_event, pw_type) = {
        let state = sim.lock();
        let wanted = match &req.flavor {
            Some(f) => Some(platform_of(f).ok_or(format!("unknown flavor {f}"))?),
            None => None,
        };
        let candidates: Vec<&(Platform, String)> = state
            .repositories
            .keys()
            .filter(|(p, n)| {
                wanted.is_none_or(|w| w == *p) && n.eq_ignore_ascii_case(&req.repository)
            })
            .collect();
        let (platform, name) = match candidates.as_slice() {
            [one] => (one.0, one.1.clone()),
            [] => return Err(format!("no repository {}", req.repository)),
            _ => {
                return Err(format!(
                    "{} exists on Cloud and Data Center; say which with \"flavor\"",
                    req.repository
                ));
            }
        };
        let owner = name
            .split_once('/')
            .map(|(o, _)| o.to_owned())
            .unwrap_or_default();
        let mut targets = Vec::new();
        let (mut dc_event, mut pw_type) = (None, None);
        match platform {
            Platform::Cloud => {
                if !bitbucket_events::catalogue::CLOUD_EVENTS.contains(&req.event.as_str()) {
                    return Err(format!("{} is not a Cloud event", req.event));
                }
                for scope in [Scope::Repository(name.clone()), Scope::Owner(owner.clone())] {
                    for hook in state.hooks(platform, &scope).into_iter().flatten() {
                        if hook.active && hook.events.contains(&req.event) {
                            targets.push(Target::Cloud { hook: hook.clone() });
                        }
                    }
                }
            }
            Platform::Server => {
                if bitbucket_events::catalogue::DATA_CENTER_EVENTS.contains(&req.event.as_str()) {
                    dc_event = Some(req.event.clone());
                    pw_type = post_webhooks_type_for(&req.event).map(str::to_owned);
                } else if post_webhooks_event_key(&req.event).is_some() {
                    pw_type = Some(req.event.clone());
                    dc_event = data_center_event_for(&req.event).map(str::to_owned);
                } else {
                    return Err(format!(
                        "{} is neither a Data Center nor a Post Webhooks event",
                        req.event
                    ));
                }
                if let Some(event) = &dc_event {
                    for scope in [
                        Scope::Repository(name.clone()),
                        Scope::Owner(owner.to_ascii_uppercase()),
                    ] {
                        for hook in state.hooks(platform, &scope).into_iter().flatten() {
                            if hook.active && hook.events.contains(event) {
                                targets.push(Target::DataCenter {
                                    scope: scope.clone(),
                                    hook: hook.clone(),
                                });
                            }
                        }
                    }
                }
                if let Some(event_type) = &pw_type {
                    for config in crate::postwebhooks::effective(&state, &name) {
                        if config.enabled && config.event_types.contains(event_type) {
                            targets.push(Target::PostWebhooks {
                                config: config.clone(),
                            });
                        }
                    }
                }
            }
        }
        (platform, name, targets, dc_event, pw_type)
    };

    let user = "sim-user";
    let hash = format!("{:040x}", rand::random::<u128>());
    let now = Timestamp::now();
    let cloud_date = now.to_string();
    let dc_date = now.strftime("%Y-%m-%dT%H:%M:%S%z").to_string();
    let mut reports = Vec::new();
    let mut invocations = Vec::new();
    for target in targets {
        match target {
            Target::Cloud { hook } => {
                let example = Example {
                    repository: &name,
                    user,
                    date: &cloud_date,
                    hash: &hash,
                };
                let body = example.payload(Backend::Cloud, &req.event);
                let mut outgoing =
                    Outgoing::cloud(&req.event, &hook.uuid, &body, hook.secret.as_deref());
                // Cloud retries a 5xx answer up to two more times.
                let mut attempts = 0;
                let attempt = loop {
                    attempts += 1;
                    outgoing.set_header("X-Attempt-Number", attempts.to_string());
                    let attempt = sim
                        .deliverer
                        .send(&hook.url, &outgoing, !hook.skip_cert_verification)
                        .await;
                    if attempts >= 3 || attempt.status.is_none_or(|s| s < 500) {
                        break attempt;
                    }
                };
                reports.push(report(
                    "Cloud",
                    hook.uuid.clone(),
                    &hook.url,
                    &req.event,
                    attempts,
                    &attempt,
                ));
            }
            Target::DataCenter { scope, hook } => {
                let event = dc_event.clone().unwrap_or_default();
                let example = Example {
                    repository: &name,
                    user,
                    date: &dc_date,
                    hash: &hash,
                };
                let body = example.payload(Backend::DataCenter, &event);
                let outgoing = Outgoing::data_center(&event, &body, hook.secret.as_deref());
                let attempt = sim
                    .deliverer
                    .send(&hook.url, &outgoing, !hook.skip_cert_verification)
                    .await;
                reports.push(report(
                    "DataCenter",
                    hook.id.to_string(),
                    &hook.url,
                    &event,
                    1,
                    &attempt,
                ));
                invocations.push((scope, hook.id, event, hook.url.clone(), attempt));
            }
            Target::PostWebhooks { config } => {
                let event_type = pw_type.clone().unwrap_or_default();
                let example = Example {
                    repository: &name,
                    user,
                    date: &dc_date,
                    hash: &hash,
                };
                let body = example.payload(Backend::PostWebhooks, &event_type);
                let outgoing = Outgoing::post_webhooks(&event_type, &body, &config);
                let attempt = sim
                    .deliverer
                    .send(&config.url, &outgoing, !config.ignore_certs)
                    .await;
                reports.push(report(
                    "PostWebhooks",
                    config.id.to_string(),
                    &config.url,
                    &event_type,
                    1,
                    &attempt,
                ));
            }
        }
    }

    let mut state = sim.lock();
    for (scope, id, event, url, attempt) in invocations {
        let invocation_id = state.next_id();
        if let Some(hook) = state
            .hooks_mut(platform, &scope)
            .and_then(|hs| hs.iter_mut().find(|h| h.id == id))
        {
            hook.stats.record(Invocation {
                id: invocation_id,
                event,
                start: attempt.start,
                finish: attempt.finish,
                url,
                outcome: attempt.outcome(),
                description: attempt.description(),
            });
        }
    }
    Ok(reports)
}

fn report(
    flavor: &'static str,
    hook_id: String,
    url: &str,
    event: &str,
    attempts: u32,
    attempt: &Attempt,
) -> Report {
    Report {
        flavor,
        hook_id,
        url: url.to_owned(),
        event: event.to_owned(),
        attempts,
        status_code: attempt.status,
        outcome: attempt.outcome(),
        error: attempt.error.clone(),
    }
}
