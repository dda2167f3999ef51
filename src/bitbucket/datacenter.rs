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
    AsRead, Deleted, DeliveryStats, Error, HookSpec, Identity, Invocation, Place, RemoteHook,
    RepoRef, Result, SecretChange, SecretState, TestResult, WebhookBackend, null_default,
    place_not_found,
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
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(deserialize_with = "null_default")]
    url: String,
    #[serde(default, deserialize_with = "null_default")]
    active: bool,
    #[serde(default, deserialize_with = "null_default")]
    events: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    configuration: serde_json::Map<String, Value>,
    /// Absent or null: required (the server's default).
    #[serde(default)]
    ssl_verification_required: Option<bool>,
    #[serde(default)]
    statistics: Option<Value>,
}

/// A webhook as read: typed fields for the reconciler, the object itself for updates.
fn remote_hook(raw: serde_json::Map<String, Value>) -> std::result::Result<RemoteHook, String> {
    let w: Webhook =
        serde_json::from_value(Value::Object(raw.clone())).map_err(|e| e.to_string())?;
    let secret = match w.configuration.get("secret").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => SecretState::Known(SecretString::from(s.to_owned())),
        _ => SecretState::Unset,
    };
    let mut read = raw;
    // Statistics are read-only and can be large; they are kept typed, not echoed.
    read.remove("statistics");
    Ok(RemoteHook {
        id: w.id.to_string(),
        title: w.name,
        url: w.url,
        active: w.active,
        events: w.events,
        secret,
        skip_cert_verification: !w.ssl_verification_required.unwrap_or(true),
        stats: w.statistics.as_ref().and_then(statistics),
        read: AsRead(read),
    })
}

/// A write's answer with the configuration that was sent: servers may echo
/// `"configuration": {}` although they stored the secret, so the answer never says what
/// the secret is (a later update would otherwise send the configuration without it).
fn as_written(mut hook: RemoteHook, body: &Value) -> RemoteHook {
    let configuration = body
        .get("configuration")
        .cloned()
        .unwrap_or_else(|| json!({}));
    hook.secret = match configuration.get("secret").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => SecretState::Known(SecretString::from(s.to_owned())),
        _ => SecretState::Unset,
    };
    hook.read.0.insert("configuration".into(), configuration);
    hook
}

fn decode_hook(raw: serde_json::Map<String, Value>) -> Result<RemoteHook> {
    remote_hook(raw).map_err(|e| Error::Unexpected {
        message: format!("a webhook in Bitbucket's answer is not the JSON expected: {e}"),
    })
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

fn invocation(raw: Option<&Value>) -> Option<Invocation> {
    let raw: RawInvocation = serde_json::from_value(raw?.clone()).ok()?;
    Some(Invocation {
        at: Timestamp::from_millisecond(raw.start).unwrap_or(Timestamp::UNIX_EPOCH),
        event: raw.event,
        outcome: raw.result.outcome,
        description: raw.result.description,
    })
}

/// One statistics summary: `{lastSuccess, lastFailure, lastError, counts}`. `counts` is
/// an object `{successes, failures, errors, window}` on live servers; an older client
/// models it as a number, which says nothing per outcome and is ignored.
fn summary(v: &serde_json::Map<String, Value>) -> DeliveryStats {
    let count = |key: &str| {
        v.get("counts")
            .and_then(|c| c.get(key))
            .and_then(Value::as_u64)
    };
    DeliveryStats {
        successes: count("successes").unwrap_or(0),
        failures: count("failures").unwrap_or(0),
        errors: count("errors").unwrap_or(0),
        window: v
            .get("counts")
            .and_then(|c| c.pointer("/window/duration"))
            .and_then(Value::as_u64)
            .map(Duration::from_millis),
        last_success: invocation(v.get("lastSuccess")),
        last_failure: invocation(v.get("lastFailure")),
        last_error: invocation(v.get("lastError")),
    }
}

fn is_summary(v: &serde_json::Map<String, Value>) -> bool {
    ["lastSuccess", "lastFailure", "lastError", "counts"]
        .iter()
        .any(|k| v.contains_key(*k))
}

/// A hook's statistics in either reported shape: one summary, or a map from event id to a
/// summary (merged: the latest success / failure / error across events, counts summed).
/// None when the value is neither.
pub(crate) fn statistics(v: &Value) -> Option<DeliveryStats> {
    let object = v.as_object()?;
    if is_summary(object) {
        return Some(summary(object));
    }
    let per_event: Vec<DeliveryStats> = object
        .values()
        .filter_map(Value::as_object)
        .filter(|o| is_summary(o))
        .map(summary)
        .collect();
    if per_event.is_empty() && !object.is_empty() {
        return None;
    }
    let latest = |a: Option<Invocation>, b: Option<Invocation>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
        (a, b) => a.or(b),
    };
    Some(
        per_event
            .into_iter()
            .fold(DeliveryStats::default(), |acc, s| DeliveryStats {
                successes: acc.successes + s.successes,
                failures: acc.failures + s.failures,
                errors: acc.errors + s.errors,
                window: acc.window.max(s.window),
                last_success: latest(acc.last_success, s.last_success),
                last_failure: latest(acc.last_failure, s.last_failure),
                last_error: latest(acc.last_error, s.last_error),
            }),
    )
}

impl DataCenterClient {
    pub fn new(transport: Transport) -> DataCenterClient {
        DataCenterClient { transport }
    }

    /// A repository's or project's webhooks (Data Center has no workspaces), and `rest`.
    fn webhooks(&self, place: &Place, rest: &[&str]) -> Result<Url> {
        let mut segments = vec!["rest", "api", "latest", "projects", place.owner()];
        match place {
            Place::Repository(r) => segments.extend(["repos", r.slug.as_str()]),
            Place::Project(_) => {}
            Place::Workspace(_) => return Err(place.unsupported(Flavor::DataCenter)),
        }
        segments.push("webhooks");
        segments.extend_from_slice(rest);
        Ok(self.transport.url(&segments))
    }

    /// The whole webhook: `PUT` replaces it, so an update sends every field, the
    /// configuration (with the secret when one is wanted) and the delivery credentials as
    /// read. `current` is None for a create.
    fn body(spec: &HookSpec, current: Option<&RemoteHook>) -> Value {
        let mut body = json!({
            "name": spec.title,
            "url": spec.url,
            "active": spec.active,
            "events": spec.events,
            "sslVerificationRequired": !spec.skip_cert_verification,
        });
        let read = current.map(|c| &c.read.0);
        let mut configuration = read
            .and_then(|r| r.get("configuration"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match &spec.secret {
            SecretChange::Set(secret) => {
                configuration.insert("secret".into(), json!(secret.expose_secret()));
            }
            SecretChange::Remove => {
                configuration.remove("secret");
            }
            // The secret as read (Data Center returns it in clear) goes back unchanged.
            SecretChange::Keep => {}
        }
        // An empty secret makes Data Center fail with a 500; without one, no configuration.
        if configuration
            .get("secret")
            .is_some_and(|s| s.as_str().is_none_or(str::is_empty))
        {
            configuration.remove("secret");
        }
        if !configuration.is_empty() {
            body["configuration"] = Value::Object(configuration);
        }
        if let Some(credentials) = read.and_then(|r| r.get("credentials")) {
            body["credentials"] = credentials.clone();
        }
        body
    }
}

/// The repository's or project's webhook settings page on a Data Center server
/// (built-in webhooks and the Post Webhooks app share it).
pub(super) fn server_webhooks_page(transport: &Transport, place: &Place) -> String {
    let base = transport.base().as_str().trim_end_matches('/');
    match place {
        Place::Repository(r) => format!(
            "{base}/plugins/servlet/webhooks/projects/{}/repos/{}",
            r.owner, r.slug
        ),
        other => format!("{base}/plugins/servlet/webhooks/projects/{}", other.owner()),
    }
}

/// Every page of a Data Center listing at `url` (`start`/`limit` asked,
/// `isLastPage`/`nextPageStart` followed).
async fn all_server_pages<T: serde::de::DeserializeOwned>(
    transport: &Transport,
    url: &Url,
) -> Result<Vec<T>> {
    let mut values = Vec::new();
    let mut start = 0u64;
    let mut pages = 0;
    loop {
        let mut page_url = url.clone();
        page_url
            .query_pairs_mut()
            .append_pair("start", &start.to_string())
            .append_pair("limit", "100");
        let page: Page<T> = transport.json(Call::get(page_url)).await?;
        values.extend(page.values);
        pages += 1;
        match (page.is_last_page, page.next_page_start) {
            (false, Some(next)) if next > start && pages < super::MAX_PAGES => start = next,
            (false, Some(next)) if next > start => {
                return Err(Error::Unexpected {
                    message: format!("the listing goes past {} pages", super::MAX_PAGES),
                });
            }
            (false, next) => {
                return Err(Error::Unexpected {
                    message: format!(
                        "a page that is not the last has no nextPageStart after {start} (it says {next:?})"
                    ),
                });
            }
            (true, _) => return Ok(values),
        }
    }
}

/// A repository in a project's listing.
#[derive(Deserialize)]
struct ListedRepository {
    slug: String,
    project: ListedProject,
}

#[derive(Deserialize)]
struct ListedProject {
    key: String,
}

/// Every repository of project `key` the credential may see (shared with Post Webhooks:
/// the same server's REST API).
pub(super) async fn list_server_repositories(
    transport: &Transport,
    key: &str,
) -> Result<Vec<RepoRef>> {
    let url = transport.url(&["rest", "api", "latest", "projects", key, "repos"]);
    let listed: Vec<ListedRepository> = all_server_pages(transport, &url)
        .await
        .map_err(|e| place_not_found(&Place::Project(key.to_owned()), e))?;
    Ok(listed
        .into_iter()
        .map(|r| RepoRef {
            owner: r.project.key,
            slug: r.slug,
        })
        .collect())
}

/// Every project key the credential may view (shared with Post Webhooks).
pub(super) async fn list_server_projects(transport: &Transport) -> Result<Vec<String>> {
    let url = transport.url(&["rest", "api", "latest", "projects"]);
    let listed: Vec<ListedProject> = all_server_pages(transport, &url).await?;
    Ok(listed.into_iter().map(|p| p.key).collect())
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
            user: Some(user.to_owned()),
            detail: None,
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

    fn identity_call(&self) -> &'static str {
        "GET /rest/api/latest/application-properties"
    }

    async fn verify_credentials(&self) -> Result<Identity> {
        verify_server_credentials(&self.transport).await
    }

    async fn list_hooks(&self, place: &Place) -> Result<Vec<RemoteHook>> {
        let mut url = self.webhooks(place, &[])?;
        // Statistics come with the listing: one request per repository serves the drift
        // check and delivery health of every hook in it.
        url.query_pairs_mut().append_pair("statistics", "true");
        let raw: Vec<serde_json::Map<String, Value>> = all_server_pages(&self.transport, &url)
            .await
            .map_err(|e| place_not_found(place, e))?;
        raw.into_iter().map(decode_hook).collect()
    }

    async fn create_hook(&self, place: &Place, spec: &HookSpec) -> Result<RemoteHook> {
        let body = Self::body(spec, None);
        let hook = self
            .transport
            .write(Method::POST, self.webhooks(place, &[])?, &body)
            .await
            .map_err(|e| place_not_found(place, e))?;
        decode_hook(hook).map(|h| as_written(h, &body))
    }

    async fn update_hook(
        &self,
        place: &Place,
        current: &RemoteHook,
        spec: &HookSpec,
    ) -> Result<RemoteHook> {
        let body = Self::body(spec, Some(current));
        let hook = self
            .transport
            .write(Method::PUT, self.webhooks(place, &[&current.id])?, &body)
            .await?;
        decode_hook(hook).map(|h| as_written(h, &body))
    }

    async fn delete_hook(&self, place: &Place, id: &str) -> Result<Deleted> {
        self.transport.delete(self.webhooks(place, &[id])?).await
    }

    async fn test_delivery(
        &self,
        place: &Place,
        id: &str,
        url: &str,
        skip_cert_verification: bool,
    ) -> Result<TestResult> {
        // Live 9.x servers answer 500 without `url`; clients that work send it with the
        // hook id, the TLS setting and an empty JSON body.
        let mut target = self.webhooks(place, &["test"])?;
        target
            .query_pairs_mut()
            .append_pair("webhookId", id)
            .append_pair("url", url)
            .append_pair(
                "sslVerificationRequired",
                if skip_cert_verification {
                    "false"
                } else {
                    "true"
                },
            );
        let empty = json!({});
        // Sending a test is not idempotent (the target sees two), but it is harmless.
        let call = Call {
            method: Method::POST,
            url: target,
            body: Some(&empty),
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

    fn webhooks_page(&self, place: &Place) -> String {
        server_webhooks_page(&self.transport, place)
    }

    async fn list_repositories(&self, owner: &str, _project: Option<&str>) -> Result<Vec<RepoRef>> {
        list_server_repositories(&self.transport, owner).await
    }

    async fn list_projects(&self) -> Result<Vec<String>> {
        list_server_projects(&self.transport).await
    }

    fn hook_api_url(&self, place: &Place, id: &str) -> Option<String> {
        self.webhooks(place, &[id]).ok().map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(start: i64, outcome: &str) -> Value {
        json!({ "event": "repo:refs_changed", "start": start, "result": { "outcome": outcome, "description": "200" } })
    }

    #[test]
    fn one_summary_and_a_map_by_event_read_the_same_way() {
        let one = json!({
            "lastSuccess": call(10, "SUCCESS"), "lastFailure": call(20, "FAILURE"), "lastError": null,
            "counts": { "successes": 3, "failures": 1, "errors": 0, "window": { "start": 0, "duration": 3_600_000 } },
        });
        let stats = statistics(&one).expect("a summary");
        assert_eq!((stats.successes, stats.failures, stats.errors), (3, 1, 0));
        assert_eq!(stats.window, Some(Duration::from_secs(3600)));
        assert_eq!(stats.last_failure.expect("failure").outcome, "FAILURE");

        let by_event = json!({
            "repo:refs_changed": { "lastSuccess": call(10, "SUCCESS"), "counts": { "successes": 2, "failures": 0, "errors": 0 } },
            "pr:opened": { "lastSuccess": call(30, "SUCCESS"), "lastError": call(25, "ERROR"), "counts": { "successes": 1, "failures": 0, "errors": 4 } },
        });
        let merged = statistics(&by_event).expect("merged");
        assert_eq!((merged.successes, merged.errors), (3, 4));
        assert_eq!(
            merged.last_success.expect("success").at.as_millisecond(),
            30
        );
        assert_eq!(merged.last_error.expect("error").at.as_millisecond(), 25);
        assert!(merged.last_failure.is_none());
    }

    #[test]
    fn counts_as_a_number_and_empty_or_foreign_shapes_are_tolerated() {
        let numeric = json!({ "lastSuccess": call(5, "SUCCESS"), "counts": 7 });
        let stats = statistics(&numeric).expect("a summary");
        assert_eq!(stats.successes, 0);
        assert!(stats.last_success.is_some());
        assert_eq!(statistics(&json!({})), Some(DeliveryStats::default()));
        assert_eq!(statistics(&json!({ "unexpected": 1 })), None);
        assert_eq!(statistics(&json!("text")), None);
    }

    #[test]
    fn an_update_sends_the_whole_webhook_with_what_it_read() {
        let read = json!({
            "id": 7, "name": "old", "url": "https://old", "events": ["repo:refs_changed"], "active": true,
            "configuration": { "secret": "s3cret", "other": "x" },
            "credentials": { "username": "bot" }, "sslVerificationRequired": true,
        });
        let Value::Object(read) = read else {
            unreachable!()
        };
        let current = remote_hook(read).expect("hook");
        let spec = |secret| HookSpec {
            title: "new".into(),
            url: "https://new".into(),
            active: false,
            events: vec!["pr:opened".into()],
            secret,
            skip_cert_verification: true,
        };
        let keep = DataCenterClient::body(&spec(SecretChange::Keep), Some(&current));
        assert_eq!(
            keep["configuration"],
            json!({ "secret": "s3cret", "other": "x" })
        );
        assert_eq!(keep["credentials"], json!({ "username": "bot" }));
        assert_eq!(keep["sslVerificationRequired"], json!(false));
        assert_eq!(keep["active"], json!(false));
        let removed = DataCenterClient::body(&spec(SecretChange::Remove), Some(&current));
        assert_eq!(removed["configuration"], json!({ "other": "x" }));
        let created = DataCenterClient::body(&spec(SecretChange::Remove), None);
        assert!(created.get("configuration").is_none());
        assert!(created.get("credentials").is_none());
    }
}
