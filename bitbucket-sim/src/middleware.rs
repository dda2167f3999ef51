//! Around every API request: injected faults, the per-credential hourly limit, and the
//! request counts `GET /_sim/requests` reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::Sim;
use crate::http::{Caller, authenticate, cloud_error, credential_key, dc_error};
use crate::state::{After, Faults};

enum Verdict {
    Pass,
    Fail {
        status: StatusCode,
        message: &'static str,
    },
    /// Do the work, then fail the answer.
    ActThenFail {
        after: After,
        status: StatusCode,
        stall: Duration,
        body: Option<String>,
    },
}

fn applies(faults: &Faults, method: &str, route: &str, path: &str) -> bool {
    faults.routes.is_empty()
        || faults.routes.iter().any(|r| {
            r == route
                || *r == format!("{method} {route}")
                || (r.starts_with('/') && path.starts_with(r.as_str()))
        })
}

pub async fn faults_and_counts(
    AxumState(sim): AxumState<Arc<Sim>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let (verdict, latency, retry_after, reported) = {
        let mut state = sim.lock();
        let (key, access_token) = rate_key(&state, req.headers(), &path);
        let faults = state.faults.clone();
        let mut verdict = Verdict::Pass;
        let mut reported = None;
        let matches = applies(&faults, &method, &route, &path);
        if matches && let Some(limit) = faults.rate_limit_per_hour {
            let now = Instant::now();
            let window = state.rate_windows.entry(key).or_default();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600))
            {
                window.pop_front();
            }
            if window.len() >= limit as usize {
                verdict = Verdict::Fail {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: "Rate limit for this resource has been exceeded",
                };
            } else {
                window.push_back(now);
            }
            // Cloud tells access tokens their limit on the scaled /2.0/repositories group;
            // no header says how many remain, only whether under a fifth does.
            if access_token && path.starts_with("/2.0/repositories") {
                let left = (limit as usize).saturating_sub(window.len());
                reported = Some((limit, left * 5 < limit as usize));
            }
        }
        if matches && matches!(verdict, Verdict::Pass) && faults.error_rate > 0.0 {
            let remaining = faults.count.unwrap_or(u32::MAX);
            if remaining > 0 && rand::random::<f64>() < faults.error_rate {
                if let Some(count) = state.faults.count.as_mut() {
                    *count -= 1;
                }
                let status = faults
                    .status
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                verdict = match faults.after {
                    None => Verdict::Fail {
                        status,
                        message: "Injected fault",
                    },
                    Some(after) => Verdict::ActThenFail {
                        after,
                        status,
                        stall: Duration::from_millis(faults.stall_ms),
                        body: faults.body.clone(),
                    },
                };
            }
        }
        (
            verdict,
            if matches { faults.latency_ms } else { 0 },
            faults.retry_after,
            reported,
        )
    };

    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let fail = |status: StatusCode, message: &'static str| {
        let mut response = if path.starts_with("/2.0/") {
            cloud_error(status, message, None)
        } else {
            dc_error(status, message, "com.atlassian.bitbucket.ServiceException")
        };
        if let Some(seconds) = retry_after
            && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert("Retry-After", v);
        }
        response
    };
    let response = match verdict {
        Verdict::Pass => next.run(req).await,
        Verdict::Fail { status, message } => fail(status, message),
        Verdict::ActThenFail {
            after,
            status,
            stall,
            body,
        } => {
            let done = next.run(req).await;
            match after {
                After::Status => fail(status, "Injected fault after the work was done"),
                After::Drop => broken(done),
                After::Stall => {
                    tokio::time::sleep(stall).await;
                    done
                }
                After::Body => replaced(done, body.unwrap_or_default()),
            }
        }
    };
    let mut response = response;
    if let Some((limit, near)) = reported {
        let headers = response.headers_mut();
        headers.insert("X-RateLimit-Limit", HeaderValue::from(limit));
        headers.insert("X-RateLimit-Resource", HeaderValue::from_static("api"));
        headers.insert(
            "X-RateLimit-NearLimit",
            HeaderValue::from_static(if near { "true" } else { "false" }),
        );
    }
    let status = response.status().as_u16();
    *sim.lock()
        .requests
        .entry((method, route, status))
        .or_default() += 1;
    response
}

/// Whose allowance a request counts against, and whether it is a Cloud access token.
/// Cloud counts user credentials (API tokens, app passwords, OAuth) per user and each
/// access token on its own (Atlassian's "API request limits"); Data Center here per
/// credential.
fn rate_key(
    state: &crate::state::State,
    headers: &axum::http::HeaderMap,
    path: &str,
) -> (String, bool) {
    use crate::state::TokenKind;
    if path.starts_with("/2.0/")
        && let Caller::Known(p) = authenticate(state, headers)
    {
        let kind = state.tokens.get(&p.token).and_then(|t| t.kind);
        let access_token = matches!(
            kind,
            Some(
                TokenKind::RepositoryAccessToken
                    | TokenKind::ProjectAccessToken
                    | TokenKind::WorkspaceAccessToken
            )
        );
        if !access_token {
            return (format!("user:{}", p.user), false);
        }
        return (credential_key(headers), true);
    }
    (credential_key(headers), false)
}

/// The answer's status and headers with another body.
fn replaced(done: Response, body: String) -> Response {
    let (mut parts, _) = done.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The answer's status line and headers, then a broken body: the connection ends before
/// the client has the answer.
fn broken(done: Response) -> Response {
    let (mut parts, _) = done.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = axum::body::Body::from_stream(futures::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other(
            "injected: connection dropped",
        ))
    }));
    Response::from_parts(parts, body)
}
