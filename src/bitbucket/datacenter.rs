//! Bitbucket Data Center built-in webhooks:
//! `/rest/api/latest/projects/{projectKey}/repos/{slug}/webhooks`.

use std::time::Duration;

use async_trait::async_trait;
use bitbucket_events::catalogue::DATA_CENTER_EVENTS;
use jiff::Timestamp;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{Call, Transport};
use super::{
    Deleted, DeliveryStats, Error, HookSpec, Identity, Invocation, RemoteHook, RepoRef, Result,
    SecretChange, SecretState, TestResult, WebhookBackend, repository_not_found,
};
use crate::api::Flavor;

#[derive(Debug)]
pub struct DataCenterClient {
    transport: Transport,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    values: Vec<T>,
    #[serde(default = "yes")]
    is_last_page: bool,
    next_page_start: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    id: u64,
    #[serde(default)]
    name: String,
    url: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    configuration: serde_json::Map<String, Value>,
    #[serde(default = "yes")]
    ssl_verification_required: bool,
}

impl From<Webhook> for RemoteHook {
    fn from(w: Webhook) -> RemoteHook {
        let secret = match w.configuration.get("secret").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => SecretState::Known(SecretString::from(s.to_owned())),
            _ => SecretState::Unset,
        };
        RemoteHook {
            id: w.id.to_string(),
            title: w.name,
            url: w.url,
            active: w.active,
            events: w.events,
            secret,
            skip_cert_verification: !w.ssl_verification_required,
        }
    }
}

#[derive(Deserialize)]
struct RawInvocation {
    #[serde(default)]
    event: String,
    #[serde(default)]
    start: i64,
    #[serde(default)]
    result: RawResult,
}

#[derive(Deserialize, Default)]
struct RawResult {
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    last_success: Option<RawInvocation>,
    last_failure: Option<RawInvocation>,
    last_error: Option<RawInvocation>,
    #[serde(default)]
    counts: Counts,
}

#[derive(Deserialize, Default)]
struct Counts {
    #[serde(default)]
    successes: u64,
    #[serde(default)]
    failures: u64,
    #[serde(default)]
    errors: u64,
    window: Option<Window>,
}

#[derive(Deserialize)]
struct Window {
    #[serde(default)]
    duration: u64,
}

fn invocation(raw: Option<RawInvocation>) -> Option<Invocation> {
    let raw = raw?;
    Some(Invocation {
        at: Timestamp::from_millisecond(raw.start).unwrap_or(Timestamp::UNIX_EPOCH),
        event: raw.event,
        outcome: raw.result.outcome,
        description: raw.result.description,
    })
}

impl DataCenterClient {
    pub fn new(transport: Transport) -> DataCenterClient {
        DataCenterClient { transport }
    }

    fn webhooks(&self, repo: &RepoRef, rest: &[&str]) -> Url {
        let mut segments = vec![
            "rest",
            "api",
            "latest",
            "projects",
            &repo.owner,
            "repos",
            &repo.slug,
            "webhooks",
        ];
        segments.extend_from_slice(rest);
        self.transport.url(&segments)
    }

    fn body(spec: &HookSpec, creating: bool) -> Value {
        let mut body = json!({
            "name": spec.title,
            "url": spec.url,
            "active": spec.active,
            "events": spec.events,
            "sslVerificationRequired": !spec.skip_cert_verification,
        });
        // An empty secret makes Data Center fail with a 500: omit `configuration` to keep
        // the secret, send it without one to remove it.
        match &spec.secret {
            SecretChange::Set(secret) => {
                body["configuration"] = json!({ "secret": secret.expose_secret() })
            }
            SecretChange::Remove if !creating => body["configuration"] = json!({}),
            SecretChange::Remove | SecretChange::Keep => {}
        }
        body
    }
}

/// The cheap check shared with Post Webhooks (same server): authenticated requests get
/// `X-AUSERNAME`, anonymous ones do not.
pub(super) async fn verify_server_credentials(transport: &Transport) -> Result<Identity> {
    let url = transport.url(&["rest", "api", "latest", "application-properties"]);
    let answer = transport.send(Call::get(url)).await?;
    match answer
        .headers
        .get("X-AUSERNAME")
        .and_then(|v| v.to_str().ok())
    {
        Some(user) if !user.is_empty() => Ok(Identity {
            user: user.to_owned(),
        }),
        _ => Err(Error::Unauthorized {
            message: "the server treated the request as anonymous (no X-AUSERNAME in its answer)"
                .to_owned(),
        }),
    }
}

#[async_trait]
impl WebhookBackend for DataCenterClient {
    fn flavor(&self) -> Flavor {
        Flavor::DataCenter
    }

    async fn verify_credentials(&self) -> Result<Identity> {
        verify_server_credentials(&self.transport).await
    }

    async fn list_hooks(&self, repo: &RepoRef) -> Result<Vec<RemoteHook>> {
        let mut hooks = Vec::new();
        let mut start = 0u64;
        loop {
            let mut url = self.webhooks(repo, &[]);
            url.query_pairs_mut()
                .append_pair("start", &start.to_string())
                .append_pair("limit", "100");
            let page: Page<Webhook> = self
                .transport
                .json(Call::get(url))
                .await
                .map_err(|e| repository_not_found(repo, e))?;
            hooks.extend(page.values.into_iter().map(RemoteHook::from));
            match (page.is_last_page, page.next_page_start) {
                (false, Some(next)) if next > start => start = next,
                (false, _) => {
                    return Err(Error::Unexpected {
                        message: "a page that is not the last has no nextPageStart".to_owned(),
                    });
                }
                (true, _) => return Ok(hooks),
            }
        }
    }

    async fn create_hook(&self, repo: &RepoRef, spec: &HookSpec) -> Result<RemoteHook> {
        let body = Self::body(spec, true);
        let hook: Webhook = self
            .transport
            .write(Method::POST, self.webhooks(repo, &[]), &body)
            .await
            .map_err(|e| repository_not_found(repo, e))?;
        Ok(hook.into())
    }

    async fn update_hook(&self, repo: &RepoRef, id: &str, spec: &HookSpec) -> Result<RemoteHook> {
        let body = Self::body(spec, false);
        let hook: Webhook = self
            .transport
            .write(Method::PUT, self.webhooks(repo, &[id]), &body)
            .await?;
        Ok(hook.into())
    }

    async fn delete_hook(&self, repo: &RepoRef, id: &str) -> Result<Deleted> {
        self.transport.delete(self.webhooks(repo, &[id])).await
    }

    async fn delivery_stats(&self, repo: &RepoRef, id: &str) -> Result<Option<DeliveryStats>> {
        let url = self.webhooks(repo, &[id, "statistics", "summary"]);
        let summary: Summary = self.transport.json(Call::get(url)).await?;
        Ok(Some(DeliveryStats {
            successes: summary.counts.successes,
            failures: summary.counts.failures,
            errors: summary.counts.errors,
            window: summary
                .counts
                .window
                .map(|w| Duration::from_millis(w.duration)),
            last_success: invocation(summary.last_success),
            last_failure: invocation(summary.last_failure),
            last_error: invocation(summary.last_error),
        }))
    }

    async fn test_delivery(&self, repo: &RepoRef, id: &str) -> Result<TestResult> {
        let mut url = self.webhooks(repo, &["test"]);
        url.query_pairs_mut().append_pair("webhookId", id);
        // Sending a test is not idempotent (the target sees two), but it is harmless.
        let call = Call {
            method: Method::POST,
            url,
            body: None,
            idempotent: false,
        };
        let answer: Value = self.transport.json(call).await?;
        if let Some(status) = answer.pointer("/response/status").and_then(Value::as_u64) {
            let status = u16::try_from(status).unwrap_or(0);
            let verdict = if (200..300).contains(&status) {
                "succeeded"
            } else {
                "failed"
            };
            return Ok(TestResult {
                status: Some(status),
                message: format!("the target answered {status}: the test {verdict}"),
            });
        }
        let reason = answer
            .pointer("/exception/message")
            .and_then(Value::as_str)
            .unwrap_or("no answer from the target");
        Ok(TestResult {
            status: None,
            message: format!("the target did not answer: {reason}"),
        })
    }

    async fn event_catalogue(&self) -> Result<Vec<String>> {
        // Data Center has no endpoint listing webhook events.
        Ok(DATA_CENTER_EVENTS.iter().map(|e| e.to_string()).collect())
    }

    fn webhooks_page(&self, repo: &RepoRef) -> String {
        let base = self.transport.base().as_str().trim_end_matches('/');
        format!(
            "{base}/plugins/servlet/webhooks/projects/{}/repos/{}",
            repo.owner, repo.slug
        )
    }
}
