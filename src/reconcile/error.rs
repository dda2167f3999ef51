//! Why a reconcile could not do its job, with structured fields; the text of every
//! message is written here, once. `reason()` is the stable condition/Event reason.

use std::time::Duration;

use crate::api::{FORCE_ORPHAN_ANNOTATION, Reason};
use crate::bitbucket;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name} does not exist")]
    ConnectionNotFound { kind: &'static str, name: String },
    #[error("connection {name} is not ready ({reason}): {message}")]
    ConnectionNotReady {
        name: String,
        reason: Reason,
        message: String,
    },
    #[error(transparent)]
    NotAllowed(#[from] Refusal),
    #[error("Secret {namespace}/{name} does not exist")]
    SecretNotFound { namespace: String, name: String },
    #[error(transparent)]
    SecretInvalid(#[from] SecretProblem),
    #[error(transparent)]
    InvalidSpec(#[from] Invalid),
    /// `what`: "Receiver team/ci", with why in `message`.
    #[error(
        "{what} is not ready to deliver to: {message}; nothing is written to Bitbucket until it is"
    )]
    ReceiverNotReady { what: String, message: String },
    /// `what`: "ConfigMap team/urls key \"ci\"".
    #[error("{what} does not exist: it holds this Webhook's URL (urlFrom)")]
    UrlSourceNotFound { what: String },
    #[error("Webhook {holder} already manages a hook with this URL on this repository")]
    Conflict { holder: String },
    #[error("{0}")]
    Bitbucket(#[from] bitbucket::Error),
    /// `place` says what: "repository acme/api", "project PRJ", "workspace acme".
    #[error("{place} does not exist or the credential cannot see it: {message}")]
    RepositoryNotFound { place: String, message: String },
    #[error("{owner} does not exist or the credential cannot see it: {message}")]
    OwnerNotFound { owner: String, message: String },
    /// A write (the finalizer) refused because the cached copy is older than the object.
    #[error(
        "{kind} {name} changed on the API server while it was reconciled from an older copy (generation {generation:?}); retried from a fresh copy"
    )]
    Stale {
        kind: String,
        name: String,
        generation: Option<i64>,
    },
    /// A deletion that has no credential left to reach Bitbucket with.
    #[error(
        "{cause}, and this operator has not used that connection since it started, so it has no credential to delete the hook with; restore the Secret, or annotate {FORCE_ORPHAN_ANNOTATION}=true to release the Webhook and leave the hook"
    )]
    NoCredential { cause: Box<Error> },
}

/// Policy refuses what the spec asks (reason NotAllowed).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this operator does not serve ClusterBitbucketConnections (it watches one namespace); use a BitbucketConnection"
    )]
    ClusterConnectionsOff,
    #[error(
        "ClusterBitbucketConnection {connection} allows no namespace (spec.allowedNamespaces is empty)"
    )]
    NoNamespaceAllowed { connection: String },
    #[error("ClusterBitbucketConnection {connection} has an invalid allowedNamespaces: {problem}")]
    InvalidSelector { connection: String, problem: String },
    #[error(
        "ClusterBitbucketConnection {connection} does not allow namespace {namespace} (allowedNamespaces: {selector})"
    )]
    Namespace {
        connection: String,
        namespace: String,
        selector: String,
    },
    #[error(
        "ClusterBitbucketConnection {connection} does not allow repository {repository} (allowedRepositories: {})",
        patterns.join(", ")
    )]
    Repository {
        connection: String,
        repository: String,
        patterns: Vec<String>,
    },
    #[error(
        "baseURL {base} leads to a {kind} address, which a namespaced BitbucketConnection may not reach: use a ClusterBitbucketConnection, or run the operator with --namespaced-private-targets (chart value operator.namespacedPrivateTargets)"
    )]
    PrivateBaseUrl { base: String, kind: &'static str },
}

/// A Secret exists but its content cannot be used (reason SecretInvalid).
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    #[error("Secret {namespace}/{name} has no key \"{key}\"")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key \"{key}\" is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key \"{key}\" is empty")]
    Empty {
        namespace: String,
        name: String,
        key: String,
    },
    /// The connection's credential Secret does not fit its auth type.
    #[error("{0}")]
    Credentials(String),
}

/// The spec cannot be served as written (reason InvalidSpec).
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("repository {value:?} is not owner/slug")]
    Repository { value: String },
    /// scope Project or Workspace with a repository that is not a project key / workspace.
    #[error("repository {value:?} must name the {scope} alone (no \"/\") with scope {scope}")]
    Owner { value: String, scope: &'static str },
    /// A scope the connection's flavor has no hooks at.
    #[error("{0}")]
    Scope(String),
    #[error("{}", problems.join("; "))]
    Events { problems: Vec<String> },
    #[error("Post Webhooks for Bitbucket does not sign deliveries: remove spec.secretRef")]
    UnsignedBackend,
    #[error(
        "the signing secret in Secret {namespace}/{name} is longer than the 128 characters Bitbucket accepts"
    )]
    SecretTooLong { namespace: String, name: String },
    /// The connection's settings cannot make a client (a malformed baseURL or CA).
    #[error("{0}")]
    Connection(String),
    /// A WebhookSet's selector does not fit its connection's flavor, or a pattern is bad.
    #[error("selector: {0}")]
    Selector(String),
    #[error(
        "discoveryInterval {value:?} is not a duration of at least 10s (\"90s\", \"10m\", \"1h\")"
    )]
    DiscoveryInterval { value: String },
    /// What `urlFrom` names cannot give a URL Bitbucket can deliver to, or a Receiver
    /// that could verify what Bitbucket sends.
    #[error("urlFrom: {0}")]
    UrlFrom(String),
}

impl Error {
    pub fn reason(&self) -> Reason {
        match self {
            Error::Kube(_) => Reason::KubernetesError,
            Error::ConnectionNotFound { .. } => Reason::ConnectionNotFound,
            // The connection's own cause where it is one the Webhook's owner can act on.
            Error::ConnectionNotReady { reason, .. } => match reason {
                Reason::Unauthorized
                | Reason::Forbidden
                | Reason::SecretNotFound
                | Reason::SecretInvalid
                | Reason::InvalidSpec
                | Reason::NotAllowed
                | Reason::BitbucketUnavailable
                | Reason::RateLimited => *reason,
                _ => Reason::ConnectionNotReady,
            },
            Error::NotAllowed(_) => Reason::NotAllowed,
            Error::SecretNotFound { .. } | Error::NoCredential { .. } => Reason::SecretNotFound,
            Error::SecretInvalid(_) => Reason::SecretInvalid,
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::Conflict { .. } => Reason::Conflict,
            Error::Bitbucket(e) => e.reason(),
            Error::RepositoryNotFound { .. } | Error::OwnerNotFound { .. } => {
                Reason::RepositoryNotFound
            }
            Error::Stale { .. } => Reason::FinalizerError,
            Error::ReceiverNotReady { .. } => Reason::ReceiverNotReady,
            Error::UrlSourceNotFound { .. } => Reason::UrlSourceNotFound,
        }
    }

    /// Errors that go away by themselves; the others wait for someone to change something
    /// (which triggers a reconcile through the watches).
    pub fn transient(&self) -> bool {
        match self {
            // A Receiver becomes Ready by itself (the notification-controller), and a
            // ConfigMap is not watched: looked at again on backoff.
            Error::Kube(_)
            | Error::ConnectionNotReady { .. }
            | Error::Stale { .. }
            | Error::ReceiverNotReady { .. }
            | Error::UrlSourceNotFound { .. } => true,
            // A garbled answer may be a proxy's or a moment's: looked at again on backoff.
            Error::Bitbucket(e) => {
                e.retryable() || matches!(e, bitbucket::Error::Unexpected { .. })
            }
            _ => false,
        }
    }

    /// How long the error itself asks to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Bitbucket(e) => e.retry_after(),
            _ => None,
        }
    }

    /// A Bitbucket error about a place: a 404 means the repository (project, workspace)
    /// is missing.
    pub fn about_place(place: &bitbucket::Place, e: bitbucket::Error) -> Error {
        match e {
            bitbucket::Error::NotFound { message } => Error::RepositoryNotFound {
                place: place.describe(),
                message,
            },
            other => Error::Bitbucket(other),
        }
    }
}
