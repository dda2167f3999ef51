//! The simulator's in-memory Bitbucket: repositories, who may do what, hooks and their
//! delivery history, request counts and injected faults.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bitbucket_events::Backend;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Bitbucket Cloud, or one Data Center server (built-in webhooks and the Post Webhooks
/// app share its repositories).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Platform {
    Cloud,
    Server,
}

impl Platform {
    pub fn of(backend: Backend) -> Platform {
        match backend {
            Backend::Cloud => Platform::Cloud,
            Backend::DataCenter | Backend::PostWebhooks => Platform::Server,
        }
    }
}

/// How many invocations each Data Center hook remembers.
const HISTORY: usize = 100;

/// The outcome of one delivery attempt, in Data Center's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    #[serde(rename = "SUCCESS")]
    Success,
    #[serde(rename = "FAILURE")]
    Failure,
    #[serde(rename = "ERROR")]
    Error,
}

/// One delivery, as Data Center's statistics report it.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub id: u64,
    pub event: String,
    pub start: Timestamp,
    pub finish: Timestamp,
    pub url: String,
    pub outcome: Outcome,
    pub description: String,
}

/// Delivery history of a hook.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub invocations: VecDeque<Invocation>,
    pub successes: u64,
    pub failures: u64,
    pub errors: u64,
    pub window_start: Option<Timestamp>,
}

impl Stats {
    pub fn record(&mut self, invocation: Invocation) {
        match invocation.outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Failure => self.failures += 1,
            Outcome::Error => self.errors += 1,
        }
        self.window_start.get_or_insert(invocation.start);
        if self.invocations.len() == HISTORY {
            self.invocations.pop_front();
        }
        self.invocations.push_back(invocation);
    }

    pub fn last(&self, outcome: Option<Outcome>, event: Option<&str>) -> Option<&Invocation> {
        self.invocations
            .iter()
            .rev()
            .find(|i| outcome.is_none_or(|o| i.outcome == o) && event.is_none_or(|e| i.event == e))
    }
}

/// A Cloud webhook subscription or a Data Center webhook.
#[derive(Clone, Debug)]
pub struct Hook {
    /// Data Center id; also used as the simulator's id for Cloud hooks.
    pub id: u64,
    /// Cloud uuid with braces.
    pub uuid: String,
    pub title: String,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub skip_cert_verification: bool,
    /// Cloud only: accepted and echoed by live Cloud.
    pub history_enabled: bool,
    /// Data Center only: basic-auth user for the target (the password is write-only).
    pub credentials: Option<(String, String)>,
    /// Data Center only: `configuration` keys other than `secret`, as last sent (a PUT
    /// replaces them with what it sends).
    pub configuration: serde_json::Map<String, serde_json::Value>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub stats: Stats,
}

/// The fields an update sends; None keeps the current value.
#[derive(Default)]
pub struct Changes {
    pub title: Option<String>,
    pub url: Option<String>,
    pub active: Option<bool>,
    pub events: Option<Vec<String>>,
    /// Some(None) removes the secret.
    pub secret: Option<Option<String>>,
    pub skip_cert_verification: Option<bool>,
}

impl Hook {
    /// Applies an update (Cloud and Data Center alike: fields sent replace, others stay).
    pub fn apply(&mut self, changes: Changes) {
        if let Some(v) = changes.title {
            self.title = v;
        }
        if let Some(v) = changes.url {
            self.url = v;
        }
        if let Some(v) = changes.active {
            self.active = v;
        }
        if let Some(v) = changes.events {
            self.events = v;
        }
        if let Some(v) = changes.secret {
            self.secret = v;
        }
        if let Some(v) = changes.skip_cert_verification {
            self.skip_cert_verification = v;
        }
        self.updated = Timestamp::now();
    }
}

/// A Post Webhooks configuration.
#[derive(Clone, Debug)]
pub struct PwConfig {
    pub id: u64,
    pub name: String,
    pub enabled: bool,
    pub url: String,
    pub event_types: Vec<String>,
    pub ignore_certs: bool,
    pub project_key: Option<String>,
    pub repository_slug: Option<String>,
    pub http_method: String,
    pub enable_authentication: bool,
    pub authentication_type: Option<String>,
    pub auth_username: Option<String>,
    pub auth_password: Option<String>,
    /// Fields the simulator does not interpret (filters, users, groups, mTLS, v1's
    /// `committersToIgnore` ...), kept and returned as sent.
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A repository and who may do what with it.
#[derive(Clone, Debug, Default)]
pub struct Repository {
    pub admins: HashSet<String>,
    pub readers: HashSet<String>,
    pub hooks: Vec<Hook>,
    /// Cloud: the key of the workspace project it belongs to (Data Center: the owner).
    pub project: Option<String>,
    /// Creation order, so listings are stable.
    pub id: u64,
}

/// A Cloud workspace or a Data Center project: its own hooks and admins.
#[derive(Clone, Debug, Default)]
pub struct Owner {
    pub admins: HashSet<String>,
    pub hooks: Vec<Hook>,
}

/// Where hooks live: on a repository ("owner/slug") or on its workspace / project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Repository(String),
    Owner(String),
}

impl Scope {
    /// The repository or owner name.
    pub fn name(&self) -> &str {
        match self {
            Scope::Repository(n) | Scope::Owner(n) => n,
        }
    }
}

/// Faults injected with `PUT /_sim/faults`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Share of matching requests answered with `status` (0.0 to 1.0).
    #[serde(default)]
    pub error_rate: f64,
    /// The status of injected errors; 503 when absent.
    #[serde(default)]
    pub status: Option<u16>,
    /// Delay added to every matching request.
    #[serde(default)]
    pub latency_ms: u64,
    /// Requests per credential per rolling hour; over it, 429.
    #[serde(default)]
    pub rate_limit_per_hour: Option<u32>,
    /// Route templates ("GET /2.0/repositories/{workspace}/{repo_slug}/hooks") or path
    /// prefixes ("/rest/api") the faults apply to; all API routes when empty.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Simulator extension: inject the error into only the next `count` matching requests.
    #[serde(default)]
    pub count: Option<u32>,
    /// Simulator extension: a `Retry-After` header (seconds) on injected errors and 429s.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Simulator extension: perform the request first, then fail its answer (`status`:
    /// answer `status` instead, as a proxy that timed out would; `drop`: send the status
    /// line and break the connection before the body; `stall`: answer only after
    /// `stallMs`, past a client's timeout). Absent: fail before acting.
    #[serde(default)]
    pub after: Option<After>,
    /// How long `after: stall` holds the answer.
    #[serde(default)]
    pub stall_ms: u64,
    /// What `after: body` answers instead of the real body (status and headers kept):
    /// malformed, truncated, huge or wrongly typed JSON, as a broken proxy or a Bitbucket
    /// version with another shape would send.
    #[serde(default)]
    pub body: Option<String>,
}

/// How an injected fault that comes after the work fails the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum After {
    Status,
    Drop,
    Stall,
    Body,
}

/// The kind of a Bitbucket Cloud credential; each kind can hold only some scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenKind {
    RepositoryAccessToken,
    ProjectAccessToken,
    WorkspaceAccessToken,
    /// An Atlassian API token (Basic, email + token), with `read:webhook:bitbucket`-style scopes.
    ApiToken,
    Oauth,
}

/// A registered credential.
#[derive(Clone, Debug)]
pub struct Token {
    pub user: String,
    /// None: a credential from before kinds were modelled; Cloud checks no scope for it.
    pub kind: Option<TokenKind>,
    pub scopes: Vec<String>,
}

/// Where the sources disagree or are unsure, which variant the simulator serves
/// (`PUT /_sim/variants`; every field optional, `DELETE /_sim/state` restores these).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Variants {
    /// The status of a Cloud scope refusal: 403 (default) or 401.
    #[serde(default = "forbidden")]
    pub cloud_scope_status: u16,
    /// How Cloud refuses `GET /2.0/user` to a credential without the `account` scope:
    /// the scope refusal naming it (default), or a plain 401 as clients report for access
    /// tokens ("Token is invalid, expired, or not supported for this endpoint.").
    #[serde(default)]
    pub cloud_user_refusal: UserRefusal,
    /// Whether an API token needs `read:<family>:bitbucket` for each event family a hook
    /// subscribes to, as access tokens need `repository`, `pullrequest`, ... (off by
    /// default: the spec lists only the webhook scopes for API tokens).
    #[serde(default)]
    pub cloud_api_token_event_scopes: bool,
    /// The shape of a Data Center hook's statistics.
    #[serde(default)]
    pub dc_statistics: StatisticsShape,
    /// The status of a Data Center create: 200 (the 9.2 and 9.4 specs) or 201 (observed
    /// on 9.x servers).
    #[serde(default = "ok")]
    pub dc_create_status: u16,
    /// What a Data Center create or update answers in `configuration`: the stored one
    /// (`stored`, default) or `{}` although a secret is stored (`empty`, observed).
    #[serde(default)]
    pub dc_write_configuration: WriteConfiguration,
    /// Which API the Post Webhooks app serves.
    #[serde(default)]
    pub post_webhooks_api: AppApi,
    /// What a Post Webhooks v2 listing by `projectKey` alone answers: the project's own
    /// configurations (default), or also those of its repositories (undocumented).
    #[serde(default)]
    pub post_webhooks_project_listing: ProjectListing,
    /// What a v2 listing of a repository answers: its own configurations (default), or
    /// also its project's (the vendor's example listing shows a project's configuration
    /// beside a repository's).
    #[serde(default)]
    pub post_webhooks_repository_listing: RepositoryListing,
    /// The shape of `/configurations/event-types` (the vendor shows none): a list of
    /// names (default), a list of objects, an object keyed by type, or refused (401) to
    /// a caller who is not a system administrator.
    #[serde(default)]
    pub post_webhooks_event_types: EventTypesAnswer,
}

/// See [`Variants::post_webhooks_repository_listing`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RepositoryListing {
    #[default]
    Own,
    WithProject,
}

/// See [`Variants::post_webhooks_event_types`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EventTypesAnswer {
    #[default]
    Names,
    Objects,
    Object,
    Refused,
}

/// See [`Variants::post_webhooks_project_listing`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProjectListing {
    #[default]
    Own,
    WithRepositories,
}

fn forbidden() -> u16 {
    403
}

fn ok() -> u16 {
    200
}

/// See [`Variants::cloud_user_refusal`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum UserRefusal {
    #[default]
    Scope,
    Plain401,
}

/// See [`Variants::dc_write_configuration`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteConfiguration {
    #[default]
    Stored,
    Empty,
}

impl Default for Variants {
    fn default() -> Self {
        Variants {
            cloud_scope_status: forbidden(),
            cloud_user_refusal: UserRefusal::default(),
            cloud_api_token_event_scopes: false,
            dc_statistics: StatisticsShape::default(),
            dc_create_status: ok(),
            dc_write_configuration: WriteConfiguration::default(),
            post_webhooks_api: AppApi::default(),
            post_webhooks_project_listing: ProjectListing::default(),
            post_webhooks_repository_listing: RepositoryListing::default(),
            post_webhooks_event_types: EventTypesAnswer::default(),
        }
    }
}

/// Data Center statistics: one summary object, or a map from event id to a summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StatisticsShape {
    #[default]
    Summary,
    ByEvent,
}

/// The Post Webhooks app's API: v2 (3.5.5 and later) or v1 (older, per repository).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum AppApi {
    #[default]
    #[serde(rename = "v2")]
    V2,
    #[serde(rename = "v1")]
    V1,
}

/// The whole simulated Bitbucket.
#[derive(Default)]
pub struct State {
    /// (platform, "owner/slug") -> repository.
    pub repositories: BTreeMap<(Platform, String), Repository>,
    /// (platform, workspace or project key) -> hooks and admins at that level.
    pub owners: BTreeMap<(Platform, String), Owner>,
    pub post_webhooks: Vec<PwConfig>,
    /// token -> who it belongs to, its kind and scopes.
    pub tokens: HashMap<String, Token>,
    pub variants: Variants,
    pub next_id: u64,
    pub faults: Faults,
    /// Requests seen per credential, for `rateLimitPerHour`.
    pub rate_windows: HashMap<String, VecDeque<Instant>>,
    /// (method, route template, status) -> count.
    pub requests: BTreeMap<(String, String, u16), u64>,
}

impl State {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn repository(&self, platform: Platform, name: &str) -> Option<&Repository> {
        self.repositories.get(&(platform, name.to_owned()))
    }

    pub fn repository_mut(&mut self, platform: Platform, name: &str) -> Option<&mut Repository> {
        self.repositories.get_mut(&(platform, name.to_owned()))
    }

    /// Whether the scope exists, and the tokens that administer it.
    pub fn admins(&self, platform: Platform, scope: &Scope) -> Option<&HashSet<String>> {
        match scope {
            Scope::Repository(name) => self.repository(platform, name).map(|r| &r.admins),
            Scope::Owner(name) => self
                .owners
                .get(&(platform, name.clone()))
                .map(|o| &o.admins),
        }
    }

    /// Whether the token administers the scope: its own admins, and for a repository the
    /// admins of its workspace or project too (Cloud workspace admins and Data Center
    /// project admins administer every repository under them).
    pub fn administers(&self, platform: Platform, scope: &Scope, token: &str) -> bool {
        let own = self
            .admins(platform, scope)
            .is_some_and(|a| a.contains(token));
        let inherited = match scope {
            Scope::Repository(name) => name.split_once('/').is_some_and(|(owner, _)| {
                self.admins(platform, &Scope::Owner(owner.to_owned()))
                    .is_some_and(|a| a.contains(token))
            }),
            Scope::Owner(_) => false,
        };
        own || inherited
    }

    /// Whether the token may read the scope at all (admin or reader).
    pub fn can_read(&self, platform: Platform, scope: &Scope, token: &str) -> bool {
        match scope {
            Scope::Repository(name) => {
                self.administers(platform, scope, token)
                    || self
                        .repository(platform, name)
                        .is_some_and(|r| r.readers.contains(token))
            }
            Scope::Owner(_) => self
                .admins(platform, scope)
                .is_some_and(|a| a.contains(token)),
        }
    }

    pub fn hooks(&self, platform: Platform, scope: &Scope) -> Option<&Vec<Hook>> {
        match scope {
            Scope::Repository(name) => self.repository(platform, name).map(|r| &r.hooks),
            Scope::Owner(name) => self.owners.get(&(platform, name.clone())).map(|o| &o.hooks),
        }
    }

    pub fn hooks_mut(&mut self, platform: Platform, scope: &Scope) -> Option<&mut Vec<Hook>> {
        match scope {
            Scope::Repository(name) => self.repository_mut(platform, name).map(|r| &mut r.hooks),
            Scope::Owner(name) => self
                .owners
                .get_mut(&(platform, name.clone()))
                .map(|o| &mut o.hooks),
        }
    }

    /// The repositories of a workspace or project that `token` may see (it reads or
    /// administers them, or administers the owner), in creation order; None when the
    /// owner does not exist.
    pub fn visible_repositories(
        &self,
        platform: Platform,
        owner: &str,
        token: &str,
    ) -> Option<Vec<(String, &Repository)>> {
        let owner_admin = self
            .admins(platform, &Scope::Owner(owner.to_owned()))
            .map(|admins| admins.contains(token));
        let mut found = false;
        let mut visible: Vec<(String, &Repository)> = self
            .repositories
            .iter()
            .filter(|((p, name), _)| {
                *p == platform
                    && name
                        .split_once('/')
                        .is_some_and(|(o, _)| o.eq_ignore_ascii_case(owner))
            })
            .inspect(|_| found = true)
            .filter(|(_, r)| {
                owner_admin == Some(true) || r.admins.contains(token) || r.readers.contains(token)
            })
            .map(|((_, name), r)| (name.clone(), r))
            .collect();
        if !found && owner_admin.is_none() {
            return None;
        }
        visible.sort_by_key(|(_, r)| r.id);
        Some(visible)
    }

    /// The user a token belongs to.
    pub fn user(&self, token: &str) -> Option<&str> {
        self.tokens.get(token).map(|t| t.user.as_str())
    }

    /// Data Center repository keys compare the project key case-insensitively.
    pub fn server_repository_name(&self, project: &str, slug: &str) -> String {
        let wanted = format!("{project}/{slug}");
        self.repositories
            .keys()
            .find(|(p, name)| *p == Platform::Server && name.eq_ignore_ascii_case(&wanted))
            .map(|(_, name)| name.clone())
            .unwrap_or(wanted)
    }
}
