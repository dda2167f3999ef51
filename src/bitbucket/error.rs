//! Every Bitbucket answer that is not a success, classified. `reason()` becomes the
//! condition reason, event reason and metric label.

use std::time::Duration;

use crate::api::Reason;

/// What went wrong talking to Bitbucket. Messages never contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The credentials were not accepted (bad, expired or revoked).
    #[error("Bitbucket rejected the credentials: {message}")]
    Unauthorized { message: String },
    /// The credentials are valid but lack a permission.
    #[error(
        "the credential may not manage webhooks here (it must be a repository admin): {message}"
    )]
    Forbidden { message: String },
    /// The token lacks an OAuth / access-token scope the call needs (Cloud names both sets).
    #[error("{}", scope_text(required, granted))]
    MissingScope {
        required: Vec<String>,
        granted: Vec<String>,
    },
    /// The repository (or the hook, where the caller says so) does not exist.
    #[error("not found: {message}")]
    NotFound { message: String },
    /// Bitbucket refused the request's content; its message says why.
    #[error("Bitbucket refused the request: {message}")]
    Invalid { message: String },
    /// Too many requests: Bitbucket answered 429, or the connection's own budget is spent.
    #[error("{}", rate_limited_text(*local, *retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        local: bool,
    },
    /// 5xx, timeouts and connection failures.
    #[error("Bitbucket is unavailable: {message}")]
    Unavailable { message: String },
    /// The backend cannot do this at all (for example delivery statistics on Cloud).
    #[error("{what} is not supported by {backend}")]
    Unsupported {
        what: &'static str,
        backend: &'static str,
    },
    /// An answer the client did not expect (status or body).
    #[error("unexpected answer from Bitbucket: {message}")]
    Unexpected { message: String },
}

fn scope_text(required: &[String], granted: &[String]) -> String {
    let list = |s: &[String]| {
        if s.is_empty() {
            "none".to_owned()
        } else {
            s.join(", ")
        }
    };
    format!(
        "the credential lacks a scope Bitbucket requires for this call: required {}; the token has {}",
        list(required),
        list(granted)
    )
}

fn rate_limited_text(local: bool, retry_after: Option<Duration>) -> String {
    let wait = retry_after
        .map(|d| format!("; retry in {}s", d.as_secs().max(1)))
        .unwrap_or_default();
    if local {
        format!("the connection's request budget (rateLimit.requestsPerHour) is used up{wait}")
    } else {
        format!("Bitbucket's rate limit was hit (429){wait}")
    }
}

impl Error {
    /// A stable CamelCase name for conditions, events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Unauthorized { .. } => Reason::Unauthorized,
            Error::Forbidden { .. } | Error::MissingScope { .. } => Reason::Forbidden,
            Error::NotFound { .. } => Reason::NotFound,
            Error::Invalid { .. } => Reason::InvalidSpec,
            Error::RateLimited { .. } => Reason::RateLimited,
            Error::Unavailable { .. } => Reason::BitbucketUnavailable,
            Error::Unsupported { .. } => Reason::Unsupported,
            Error::Unexpected { .. } => Reason::UnexpectedResponse,
        }
    }

    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::RateLimited { .. } | Error::Unavailable { .. })
    }

    /// How long Bitbucket (or the budget) asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
