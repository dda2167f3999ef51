//! Typed clients for the three Bitbucket webhook APIs behind one trait,
//! [`WebhookBackend`]: what the reconciler needs and nothing else.

pub mod budget;
mod cloud;
pub mod credentials;
mod datacenter;
pub mod error;
mod postwebhooks;
pub mod queue;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;

pub use budget::Budget;
pub use credentials::Credentials;
pub use error::{Error, Result};
pub use transport::{Observer, RetryPolicy, TlsOptions};

use crate::api::Flavor;
use transport::Transport;

/// The most pages one listing follows: 1,000 pages of 100 hooks or repositories is more
/// than any repository, project or workspace holds; past it a server is going round.
pub const MAX_PAGES: usize = 1_000;

/// Bitbucket Cloud's API root, the default `baseURL` of a Cloud connection.
pub const CLOUD_API: &str = "https://api.bitbucket.org/2.0";

/// A repository: Cloud "workspace/slug" or Data Center "PROJECT/slug".
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    pub owner: String,
    pub slug: String,
}

impl RepoRef {
    pub fn parse(text: &str) -> Option<RepoRef> {
        let (owner, slug) = text.split_once('/')?;
        if owner.is_empty() || slug.is_empty() || slug.contains('/') {
            return None;
        }
        Some(RepoRef {
            owner: owner.to_owned(),
            slug: slug.to_owned(),
        })
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.slug)
    }
}

/// Where a hook lives: one repository, or a Data Center project / Cloud workspace whose
/// hooks fire for every repository under it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Repository(RepoRef),
    /// A Data Center project (built-in webhooks or Post Webhooks), by key.
    Project(String),
    /// A Cloud workspace, by slug or `{uuid}`.
    Workspace(String),
}

impl Place {
    /// The workspace or project: the repository's owner, or the place itself.
    pub fn owner(&self) -> &str {
        match self {
            Place::Repository(r) => &r.owner,
            Place::Project(o) | Place::Workspace(o) => o,
        }
    }

    /// "repository acme/api", "project PRJ", "workspace acme": for messages.
    pub fn describe(&self) -> String {
        match self {
            Place::Repository(r) => format!("repository {r}"),
            Place::Project(k) => format!("project {k}"),
            Place::Workspace(w) => format!("workspace {w}"),
        }
    }

    /// The error for a flavor that has no hooks at this level.
    pub(crate) fn unsupported(&self, flavor: Flavor) -> Error {
        Error::Invalid {
            message: format!(
                "the {flavor:?} API has no webhooks on a {}",
                self.describe()
            ),
        }
    }
}

/// "acme/api" (a repository goes by its name alone, as everywhere in messages),
/// "project PRJ", "workspace acme".
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Repository(r) => r.fmt(f),
            other => f.write_str(&other.describe()),
        }
    }
}

/// What Bitbucket reports about a hook's secret.
#[derive(Clone, Debug, Default)]
pub enum SecretState {
    /// No secret (or the backend has none: Post Webhooks).
    #[default]
    Unset,
    /// A secret is set but write-only (Cloud `secret_set`).
    Set,
    /// The secret itself, as Data Center returns it.
    Known(SecretString),
}

/// A webhook as Bitbucket has it.
#[derive(Clone, Debug, Default)]
pub struct RemoteHook {
    /// Cloud uuid ("{...}"), Data Center or Post Webhooks id.
    pub id: String,
    pub title: String,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
    pub secret: SecretState,
    pub skip_cert_verification: bool,
    /// Delivery statistics, where the listing carries them (Data Center).
    pub stats: Option<DeliveryStats>,
    /// The object as Bitbucket returned it: an update sends back what the operator does not
    /// manage (Data Center delivery credentials, Post Webhooks filters), because those
    /// APIs replace the whole object on `PUT`.
    pub read: AsRead,
}

/// A hook's JSON as read. Its `Debug` shows nothing: Data Center returns secrets in clear.
#[derive(Clone, Default)]
pub struct AsRead(pub serde_json::Map<String, serde_json::Value>);

impl std::fmt::Debug for AsRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsRead({} fields)", self.0.len())
    }
}

/// What to do with the hook's secret on create or update.
#[derive(Clone, Debug)]
pub enum SecretChange {
    Keep,
    Set(SecretString),
    Remove,
}

/// The desired hook, as the reconciler sends it.
#[derive(Clone, Debug)]
pub struct HookSpec {
    pub title: String,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
    pub secret: SecretChange,
    pub skip_cert_verification: bool,
}

/// Whether a delete found something to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    /// Bitbucket answered 404: the hook (or its repository) is already gone.
    AlreadyGone,
}

/// One delivery in Data Center's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub at: Timestamp,
    pub event: String,
    /// SUCCESS, FAILURE (non-2xx answer) or ERROR (no answer).
    pub outcome: String,
    pub description: String,
}

/// Data Center's delivery statistics of one hook.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DeliveryStats {
    pub successes: u64,
    pub failures: u64,
    pub errors: u64,
    pub window: Option<Duration>,
    pub last_success: Option<Invocation>,
    pub last_failure: Option<Invocation>,
    pub last_error: Option<Invocation>,
}

/// Reads `null` as the type's default: servers answer `null` where a string, list or
/// object is expected, and one such field must not fail a whole listing.
pub(crate) fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

/// The answer to an on-demand test delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    /// The target's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What happened, in a sentence.
    pub message: String,
}

/// Who the credentials belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// None: the credential is valid but may not read who it is (a Cloud repository or
    /// project access token has no `account` scope).
    pub user: Option<String>,
    /// Something worth saying about the server (the Post Webhooks API found).
    pub detail: Option<String>,
}

/// The webhook operations of one Bitbucket API.
#[async_trait]
pub trait WebhookBackend: Send + Sync + std::fmt::Debug {
    fn flavor(&self) -> Flavor;
    /// One cheap authenticated call that a webhook-only credential may make: are the
    /// credentials accepted?
    async fn verify_credentials(&self) -> Result<Identity>;
    /// Whether a 401 or 403 from `verify_credentials` proves the credential bad. Not on
    /// Cloud, where some valid tokens may not read their own identity.
    fn identity_is_conclusive(&self) -> bool {
        true
    }
    /// The request `verify_credentials` makes, for messages.
    fn identity_call(&self) -> &'static str;
    /// Every hook of the place (all pages; a project or workspace: its own hooks, not its
    /// repositories'), with delivery statistics where the backend reports them (Data
    /// Center: one listing per place, not one call per hook).
    async fn list_hooks(&self, place: &Place) -> Result<Vec<RemoteHook>>;
    async fn create_hook(&self, place: &Place, spec: &HookSpec) -> Result<RemoteHook>;
    /// Updates `current` (as listed) to `spec`, sending back the fields the operator does
    /// not manage.
    async fn update_hook(
        &self,
        place: &Place,
        current: &RemoteHook,
        spec: &HookSpec,
    ) -> Result<RemoteHook>;
    async fn delete_hook(&self, place: &Place, id: &str) -> Result<Deleted>;
    /// Asks Bitbucket to send one test delivery to `url` for hook `id` (Data Center only).
    async fn test_delivery(
        &self,
        place: &Place,
        id: &str,
        url: &str,
        skip_cert_verification: bool,
    ) -> Result<TestResult>;
    /// The event names this backend accepts.
    async fn event_catalogue(&self) -> Result<Vec<String>>;
    /// A page where a person can see the place's webhooks.
    fn webhooks_page(&self, place: &Place) -> String;
    /// The repositories the credential can see under `owner` (a Cloud workspace,
    /// narrowed to one of its projects by `project`; a Data Center project key), every
    /// page, in Bitbucket's order.
    async fn list_repositories(&self, owner: &str, project: Option<&str>) -> Result<Vec<RepoRef>>;
    /// Every project key the credential may see (Data Center's `GET /projects`); Cloud has
    /// no server-wide listing of this kind.
    async fn list_projects(&self) -> Result<Vec<String>> {
        Err(Error::Unsupported {
            what: "listing every project",
            backend: self.flavor().events().name(),
        })
    }
    /// The REST address of hook `id` (what a `DELETE` removes), where it does not depend
    /// on what the server answers first (Post Webhooks: on the app's API version).
    fn hook_api_url(&self, _place: &Place, _id: &str) -> Option<String> {
        None
    }
}

/// Everything needed to talk to one Bitbucket.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub flavor: Flavor,
    /// None: Cloud's public API.
    pub base_url: Option<String>,
    pub credentials: Credentials,
    pub tls: TlsOptions,
    pub budget: Arc<Budget>,
    pub retry: RetryPolicy,
    /// Counts requests into the metrics under this connection's name.
    pub observer: Option<Observer>,
}

/// The client for a connection's flavor.
pub fn connect(config: ConnectionConfig) -> Result<Arc<dyn WebhookBackend>> {
    let base = match (&config.base_url, config.flavor) {
        (Some(url), _) => url.clone(),
        (None, Flavor::Cloud) => CLOUD_API.to_owned(),
        (None, flavor) => {
            return Err(Error::Invalid {
                message: format!("baseURL is required for the {flavor:?} flavor"),
            });
        }
    };
    let transport = Transport::new(
        config.flavor,
        &base,
        config.credentials,
        &config.tls,
        config.budget,
        config.retry,
        config.observer,
    )?;
    Ok(match config.flavor {
        Flavor::Cloud => Arc::new(cloud::CloudClient::new(transport)),
        Flavor::DataCenter => Arc::new(datacenter::DataCenterClient::new(transport)),
        Flavor::PostWebhooks => Arc::new(postwebhooks::PostWebhooksClient::new(transport)),
    })
}

/// A NotFound on a call about a place means the place (repository, project, workspace)
/// is missing.
pub(crate) fn place_not_found(place: &Place, e: Error) -> Error {
    match e {
        Error::NotFound { message } => Error::NotFound {
            message: format!("{}: {message}", place.describe()),
        },
        other => other,
    }
}
