//! The one way requests reach Bitbucket: authentication, the connection's request budget,
//! TLS settings, retries with jittered exponential backoff, and error classification.
//! No client code path sends a request any other way.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::budget::Budget;
use super::credentials::Credentials;
use super::error::{Error, Result};
use crate::api::Flavor;

/// How hard to retry retryable failures (429, 5xx, timeouts, a spent budget).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// After a 429 without `Retry-After`, how long every request of the credential waits;
    /// doubled per further 429, at most an hour. Quick retries cannot succeed: Cloud's
    /// limit is a rolling hour, and each refused request may count.
    pub rate_limit_pause: Duration,
    /// How long a change waits for its turn in the budget's queue; one that would wait
    /// longer says how long instead, and its reconcile comes back then (a reconcile slot
    /// is not held longer: other connections' Webhooks need them too). Periodic work
    /// never waits.
    pub queue_patience: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            rate_limit_pause: Duration::from_secs(60),
            queue_patience: Duration::from_secs(120),
        }
    }
}

/// TLS settings for self-hosted servers.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Extra PEM CA certificates to trust.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Unexpected {
            message: format!(
                "the {} answer is not the JSON expected: {e}",
                self.status.as_u16()
            ),
        })
    }
}

/// One request.
pub struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub body: Option<&'a Value>,
    /// Whether sending it twice is harmless. A create is not: it is retried only when
    /// Bitbucket cannot have acted on it (429, spent budget, connection refused).
    pub idempotent: bool,
}

impl<'a> Call<'a> {
    pub fn get(url: Url) -> Call<'a> {
        Call {
            method: Method::GET,
            url,
            body: None,
            idempotent: true,
        }
    }
}

struct Failure {
    error: Error,
    /// Whether Bitbucket may have received (and acted on) the request.
    maybe_processed: bool,
}

/// Where request counts go: the connection's name and the metrics.
#[derive(Clone)]
pub struct Observer {
    pub connection: String,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observer({})", self.connection)
    }
}

/// Authenticated, budgeted, retrying HTTP to one Bitbucket.
pub struct Transport {
    observer: Option<Observer>,
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    budget: Arc<Budget>,
    retry: RetryPolicy,
    flavor: Flavor,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Transport({:?} {} {:?})",
            self.flavor, self.base, self.credentials
        )
    }
}

impl Transport {
    pub fn new(
        flavor: Flavor,
        base_url: &str,
        credentials: Credentials,
        tls: &TlsOptions,
        budget: Arc<Budget>,
        retry: RetryPolicy,
        observer: Option<Observer>,
    ) -> Result<Transport> {
        let invalid = |message: String| Error::Invalid { message };
        let mut base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| invalid(format!("baseURL {base_url:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid(format!(
                "baseURL {base_url:?} must be an http(s) URL with a host"
            )));
        }
        // Path segments are appended to the base, so it must not end in '/'.
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!(
                "bitbucket-webhook-operator/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // A redirect could carry the Authorization header elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(tls.insecure_skip_verify);
        if let Some(pem) = &tls.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| invalid(format!("the CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("the CA bundle holds no PEM certificate".to_owned()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(Transport {
            observer,
            http,
            base,
            credentials,
            budget,
            retry,
            flavor,
        })
    }

    /// The base URL with `segments` appended, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Whether a URL Bitbucket handed back (a `next` link) points at the same server, so
    /// following it cannot send the credentials elsewhere.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Sends a request, retrying what may be retried, and returns a 2xx answer.
    #[tracing::instrument(name = "bitbucket", skip_all, fields(method = %call.method, path = %call.url.path(), status))]
    pub async fn send(&self, call: Call<'_>) -> Result<Answer> {
        let policy = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries);
        let max_delay = self.retry.max_delay;
        let idempotent = call.idempotent;
        let attempt = || self.once(&call);
        attempt
            .retry(policy)
            // The budget's own refusal already waited as long as its queue allows.
            .when(|f: &Failure| {
                f.error.retryable()
                    && (idempotent || !f.maybe_processed)
                    && !matches!(f.error, Error::RateLimited { local: true, .. })
            })
            .adjust(
                move |f: &Failure, backoff| match (f.error.retry_after(), backoff) {
                    // The policy's retries are spent: a Retry-After does not add more (a 429
                    // answered "Retry-After: 0" again and again would never end).
                    (_, None) => None,
                    // Waiting longer than the policy allows is the caller's business (requeue).
                    (Some(wait), _) if wait > max_delay => None,
                    (Some(wait), _) => Some(wait),
                    (None, backoff) => backoff,
                },
            )
            .notify(|f: &Failure, wait| {
                tracing::debug!(error = %f.error, ?wait, "retrying a Bitbucket request");
            })
            .await
            .map_err(|f| f.error)
    }

    /// Sends a JSON body with `method` and decodes the answer. Not sent again when
    /// Bitbucket may have acted on it (a 5xx, an answer lost): a create would make a
    /// second hook, and an update is found done by the caller's next listing instead of
    /// being written twice. Refusals before any work (429, no connection) are retried.
    pub async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &Value,
    ) -> Result<T> {
        self.json(Call {
            method,
            url,
            body: Some(body),
            idempotent: false,
        })
        .await
    }

    /// Deletes; a 404 means it is already gone.
    pub async fn delete(&self, url: Url) -> Result<super::Deleted> {
        let call = Call {
            method: Method::DELETE,
            url,
            body: None,
            idempotent: true,
        };
        match self.send(call).await {
            Ok(_) => Ok(super::Deleted::Removed),
            Err(Error::NotFound { .. }) => Ok(super::Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// Sends and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        self.send(call).await?.json()
    }

    /// Takes the request's turn on the budget, counted by its purpose; the requests the
    /// budget still allows at once.
    async fn take(&self, call: &Call<'_>) -> std::result::Result<u32, Failure> {
        // Periodic work does not wait: it would hold its reconcile, and a listing others
        // wait for, behind the changes that go first. It comes back when its turn is due.
        let patience = match super::queue::Ticket::current().priority {
            super::queue::Priority::Change => self.retry.queue_patience,
            super::queue::Priority::Drift | super::queue::Priority::Health => Duration::ZERO,
        };
        let acquired = self.budget.acquire(patience).await;
        if let Some(o) = &self.observer {
            o.metrics.queued(&o.connection, self.budget.queued());
        }
        let remaining = acquired.map_err(|wait| Failure {
            error: Error::RateLimited {
                retry_after: Some(wait),
                local: true,
            },
            maybe_processed: false,
        })?;
        let purpose = super::budget::Purpose::of(&call.method, call.url.path());
        self.budget.spend(purpose);
        if let Some(o) = &self.observer {
            o.metrics.spent(&o.connection, purpose.name());
        }
        Ok(remaining)
    }

    async fn once(&self, call: &Call<'_>) -> std::result::Result<Answer, Failure> {
        let remaining = self.take(call).await?;
        let observe = |status: Option<u16>| {
            if let Some(o) = &self.observer {
                o.metrics
                    .request(&o.connection, call.method.as_str(), status);
                o.metrics.budget(&o.connection, remaining);
            }
        };
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, "application/json");
        request = self.credentials.apply(request);
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            observe(None);
            self.budget.failed();
            Failure {
                maybe_processed: !e.is_connect(),
                error: Error::Unavailable {
                    message: describe(&e),
                },
            }
        })?;
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        observe(Some(status.as_u16()));
        if status.is_success() {
            self.budget.succeeded();
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.budget.failed();
        } else {
            self.budget.answered();
        }
        let headers = response.headers().clone();
        learn_limit(&self.budget, &headers);
        let body = read_capped(response).await.map_err(|error| Failure {
            maybe_processed: true,
            error,
        })?;
        if status.is_success() {
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        let mut error = classify(self.flavor, status, &headers, &body);
        if let Error::RateLimited {
            retry_after,
            local: false,
        } = &mut error
        {
            // Every request of this credential waits, not just this one.
            *retry_after = Some(
                self.budget
                    .rate_limited(*retry_after, self.retry.rate_limit_pause),
            );
        }
        Err(Failure {
            // A 429 was rejected before any work; other errors may have done something.
            maybe_processed: !matches!(error, Error::RateLimited { .. }),
            error,
        })
    }
}

/// The most of one answer the client reads: a Data Center page of 1,000 hooks is well
/// under 1 MiB; more is a broken server or proxy, not worth the memory.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_ANSWER_BYTES => {
                return Err(Error::Unexpected {
                    message: format!(
                        "the {} answer is larger than {} MiB; not read",
                        response.status().as_u16(),
                        MAX_ANSWER_BYTES >> 20
                    ),
                });
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Error::Unavailable {
                    message: describe(&e),
                });
            }
        }
    }
}

/// reqwest's own text says little ("error sending request"); its sources say why.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    error_chain(e)
}

/// An error with its sources: reqwest's own text says little ("error sending request"),
/// its sources say why (connection refused, certificate unknown, ...).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// Bitbucket's own words from an error body: Cloud `error.message`/`detail`, Data Center
/// `errors[].message`. Also whether Data Center named an authorisation failure.
fn error_text(body: &[u8]) -> (String, bool) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (truncate(String::from_utf8_lossy(body).trim()), false);
    };
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let text = match error.get("detail") {
            Some(Value::String(d)) if !d.is_empty() => format!("{message}: {d}"),
            Some(d @ Value::Object(_)) => format!("{message}: {d}"),
            _ => message.to_owned(),
        };
        return (truncate(&text), false);
    }
    if let Some(errors) = value.get("errors").and_then(Value::as_array) {
        let text: Vec<&str> = errors
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str))
            .collect();
        let authorisation = errors.iter().any(|e| {
            e.get("exceptionName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.ends_with("AuthorisationException"))
        });
        return (truncate(&text.join("; ")), authorisation);
    }
    (truncate(&value.to_string()), false)
}

/// Cloud's scope refusal: `error.detail` is `{required: [...], granted: [...]}`. Whether
/// Cloud answers it with 403 or 401 is not documented; both are read the same way.
fn missing_scope(body: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let detail = value.pointer("/error/detail")?.as_object()?;
    let names = |key: &str| -> Vec<String> {
        detail
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(truncate)
                    .take(20)
                    .collect()
            })
            .unwrap_or_default()
    };
    let required = names("required");
    (!required.is_empty()).then(|| (required, names("granted")))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // An HTTP date.
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Maps a non-2xx answer to an [`Error`].
pub fn classify(flavor: Flavor, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    if matches!(status.as_u16(), 401 | 403)
        && let Some((required, granted)) = missing_scope(body)
    {
        return Error::MissingScope { required, granted };
    }
    let (text, authorisation) = error_text(body);
    let message = if text.is_empty() {
        status.to_string()
    } else {
        text
    };
    match status.as_u16() {
        400 | 409 | 422 => Error::Invalid { message },
        // Data Center answers 401 also for a valid user without the permission.
        401 if flavor != Flavor::Cloud && authorisation => Error::Forbidden { message },
        401 => Error::Unauthorized { message },
        403 => Error::Forbidden { message },
        404 => Error::NotFound { message },
        429 => Error::RateLimited {
            retry_after: retry_after(headers),
            local: false,
        },
        500..=599 => Error::Unavailable {
            message: format!("{}: {message}", status.as_u16()),
        },
        _ => Error::Unexpected {
            message: format!("{}: {message}", status.as_u16()),
        },
    }
}

/// Cloud's rate-limit headers (on access-token requests to the scaled `/2.0/repositories/*`
/// group): `X-RateLimit-Limit` (requests per hour), `X-RateLimit-Resource` and
/// `X-RateLimit-NearLimit` (under a fifth left). Atlassian's "Introducing scaled rate
/// limits" and its support answers; no header says how many remain. Garbled values are
/// ignored.
fn learn_limit(budget: &super::Budget, headers: &reqwest::header::HeaderMap) {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let Some(limit) = text("X-RateLimit-Limit").and_then(|v| v.parse::<u32>().ok()) else {
        return;
    };
    if limit == 0 {
        return;
    }
    let near = text("X-RateLimit-NearLimit").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    budget.reported_limit(text("X-RateLimit-Resource"), limit, near);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn cloud_and_data_center_errors_are_classified() {
        let cloud =
            br#"{"type":"error","error":{"message":"Bad request","detail":"events: nope"}}"#;
        assert_eq!(
            classify(
                Flavor::Cloud,
                StatusCode::BAD_REQUEST,
                &HeaderMap::new(),
                cloud
            ),
            Error::Invalid {
                message: "Bad request: events: nope".into()
            }
        );
        let dc_perm = br#"{"errors":[{"message":"REPO_ADMIN required","exceptionName":"com.atlassian.bitbucket.AuthorisationException"}]}"#;
        assert!(matches!(
            classify(
                Flavor::DataCenter,
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                dc_perm
            ),
            Error::Forbidden { .. }
        ));
        let dc_auth = br#"{"errors":[{"message":"Authentication failed","exceptionName":"com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"}]}"#;
        assert!(matches!(
            classify(
                Flavor::DataCenter,
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                dc_auth
            ),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(
                Flavor::Cloud,
                StatusCode::BAD_GATEWAY,
                &HeaderMap::new(),
                b"<html>"
            ),
            Error::Unavailable { .. }
        ));
    }

    #[test]
    fn scope_refusals_name_what_is_required_and_granted() {
        let body = br#"{"type":"error","error":{"message":"Your credentials lack one or more required privilege scopes.","detail":{"required":["account"],"granted":["webhook","repository"]}}}"#;
        for status in [StatusCode::FORBIDDEN, StatusCode::UNAUTHORIZED] {
            let e = classify(Flavor::Cloud, status, &HeaderMap::new(), body);
            assert_eq!(
                e,
                Error::MissingScope {
                    required: vec!["account".into()],
                    granted: vec!["webhook".into(), "repository".into()]
                }
            );
            assert_eq!(e.reason(), crate::api::Reason::Forbidden);
            assert!(
                e.to_string()
                    .contains("required account; the token has webhook, repository")
            );
        }
        // A 401 without a scope detail is a bad credential.
        let plain = br#"{"type":"error","error":{"message":"Unauthorized"}}"#;
        assert!(matches!(
            classify(
                Flavor::Cloud,
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                plain
            ),
            Error::Unauthorized { .. }
        ));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let e = classify(
            Flavor::Cloud,
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "7")]),
            b"",
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let e = classify(
            Flavor::Cloud,
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            b"",
        );
        assert_eq!(
            e,
            Error::RateLimited {
                retry_after: None,
                local: false
            }
        );
        let past = classify(
            Flavor::Cloud,
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            b"",
        );
        assert_eq!(past.retry_after(), Some(Duration::ZERO));
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "x".repeat(1000);
        let (text, _) = error_text(body.as_bytes());
        assert_eq!(text.len(), 303);
    }
}
