//! `BitbucketConnection` (namespaced) and `ClusterBitbucketConnection` (cluster-scoped):
//! which Bitbucket to talk to, with which credentials and request budget.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::conditions_schema;

/// How to reach one Bitbucket and authenticate to it. Serves Webhooks in its own namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bitbucket.hooks.dev",
    version = "v1alpha1",
    kind = "BitbucketConnection",
    doc = "How to reach one Bitbucket and authenticate to it, for the Webhooks of its own namespace.",
    namespaced,
    status = "ConnectionStatus",
    shortname = "bbconn",
    category = "bitbucket",
    printcolumn = r#"{"name":"Flavor","type":"string","jsonPath":".spec.flavor"}"#,
    printcolumn = r#"{"name":"Base URL","type":"string","jsonPath":".spec.baseURL"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Verified By","type":"string","priority":1,"jsonPath":".status.verifiedBy"}"#,
    printcolumn = r#"{"name":"Budget/h","type":"integer","priority":1,"jsonPath":".status.budget.requestsPerHour"}"#,
    printcolumn = r#"{"name":"Spent 1h","type":"integer","priority":1,"jsonPath":".status.budget.spentLastHour.total"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","priority":1,"jsonPath":".status.budget.queued"}"#,
    printcolumn = r#"{"name":"Unmanaged","type":"integer","priority":1,"jsonPath":".status.hooks.unmanaged"}"#
)]
#[x_kube(validation = Rule::new("self.flavor == 'Cloud' || has(self.baseURL)").message("baseURL is required for the DataCenter and PostWebhooks flavors (for example https://bitbucket.example.com)").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct BitbucketConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSpec,
}

/// Like BitbucketConnection, but cluster-scoped and usable from many namespaces.
/// Its credential Secrets live in the operator's own namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bitbucket.hooks.dev",
    version = "v1alpha1",
    kind = "ClusterBitbucketConnection",
    doc = "How to reach one Bitbucket and authenticate to it, for Webhooks in the namespaces it allows.",
    status = "ConnectionStatus",
    shortname = "cbbconn",
    category = "bitbucket",
    printcolumn = r#"{"name":"Flavor","type":"string","jsonPath":".spec.flavor"}"#,
    printcolumn = r#"{"name":"Base URL","type":"string","jsonPath":".spec.baseURL"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Verified By","type":"string","priority":1,"jsonPath":".status.verifiedBy"}"#,
    printcolumn = r#"{"name":"Budget/h","type":"integer","priority":1,"jsonPath":".status.budget.requestsPerHour"}"#,
    printcolumn = r#"{"name":"Spent 1h","type":"integer","priority":1,"jsonPath":".status.budget.spentLastHour.total"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","priority":1,"jsonPath":".status.budget.queued"}"#,
    printcolumn = r#"{"name":"Unmanaged","type":"integer","priority":1,"jsonPath":".status.hooks.unmanaged"}"#
)]
#[x_kube(validation = Rule::new("self.flavor == 'Cloud' || has(self.baseURL)").message("baseURL is required for the DataCenter and PostWebhooks flavors (for example https://bitbucket.example.com)").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct ClusterBitbucketConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSpec,

    /// Namespaces whose Webhooks may use this connection. Empty or absent: none.
    /// "{}" selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,

    /// Glob patterns ("acme/*", "PROJ/api-*") of the repositories Webhooks may manage
    /// through this connection. Absent: every repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 255)))]
    pub allowed_repositories: Option<Vec<String>>,
}

/// Fields shared by both connection kinds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Which Bitbucket API this is: "Cloud" (bitbucket.org, REST 2.0), "DataCenter"
    /// (built-in webhooks of Bitbucket Data Center / Server) or "PostWebhooks" (Data
    /// Center with the "Post Webhooks for Bitbucket" app).
    pub flavor: Flavor,

    /// The API root. Cloud defaults to https://api.bitbucket.org/2.0; Data Center and
    /// Post Webhooks need the server's address, for example https://bitbucket.example.com.
    #[serde(rename = "baseURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("baseURL must be an absolute http:// or https:// URL with a host").reason(Reason::FieldValueInvalid))]
    pub base_url: Option<String>,

    /// The credential the operator uses. It must be allowed to administer the
    /// repositories' webhooks (repository admin).
    pub auth: Auth,

    /// TLS settings for self-hosted servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// The request budget every call through this connection shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// The endpoint probe for every Webhook of this connection (a Webhook's own `probe`
    /// wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::api::ProbeSpec>,

    /// Let the endpoint probe reach loopback, link-local, private and cluster-internal
    /// addresses. Off by default so the operator cannot be used to reach into the cluster.
    /// On a namespaced BitbucketConnection it is honoured only when the operator runs with
    /// --namespaced-private-targets (which also lets its baseURL be such an address).
    #[serde(default)]
    pub allow_private_targets: bool,

    /// Where the cluster's Flux notification-controller receiver is reachable from
    /// Bitbucket (its ingress, e.g. "https://flux-webhook.example.com"): the base of the
    /// URL of every Webhook of this connection with `urlFrom.receiverRef` and no
    /// `baseURL` of its own.
    #[serde(
        default,
        rename = "receiverBaseURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("receiverBaseURL must be an absolute http:// or https:// URL with a host").reason(Reason::FieldValueInvalid))]
    pub receiver_base_url: Option<String>,
}

/// Which Bitbucket API a connection talks to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Flavor {
    Cloud,
    DataCenter,
    PostWebhooks,
}

impl Flavor {
    /// The flavor's event catalogue.
    pub fn events(self) -> bitbucket_events::Backend {
        match self {
            Flavor::Cloud => bitbucket_events::Backend::Cloud,
            Flavor::DataCenter => bitbucket_events::Backend::DataCenter,
            Flavor::PostWebhooks => bitbucket_events::Backend::PostWebhooks,
        }
    }
}

/// Credentials, read from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// "Bearer": the Secret's key "token" is an access token. "Basic": the keys
    /// "username" and "password" (Cloud: Atlassian account email and API token).
    #[serde(rename = "type")]
    pub type_: AuthType,
    /// The Secret holding the credential: in the connection's namespace, or the
    /// operator's namespace for a ClusterBitbucketConnection.
    pub secret_ref: SecretName,
}

/// How the operator authenticates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuthType {
    Bearer,
    Basic,
}

/// A Secret by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretName {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// TLS settings for talking to the Bitbucket API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// A Secret with extra PEM CA certificates to trust (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKey>,
    /// Do not verify the server's certificate. Only for testing: credentials travel to
    /// whoever answers.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A key within a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// The request budget of one connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Bitbucket API requests per hour that every Webhook of this connection shares.
    /// The operator never exceeds it. Bitbucket Cloud allows 1,000 webhook requests per
    /// hour per credential; the default leaves headroom for people and other tools.
    #[serde(default = "default_requests_per_hour")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_hour: i32,
}

fn default_requests_per_hour() -> i32 {
    900
}

/// Hooks on the places this connection's Webhooks live (repositories, projects,
/// workspaces), as the operator's own listings last showed them (places without a Webhook
/// are not listed for this).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookCounts {
    /// Places whose listing was counted.
    pub places: i64,
    /// Hooks on them.
    pub listed: i64,
    /// Hooks no Webhook of this connection manages (made by hand, by another tool, or
    /// through another connection).
    pub unmanaged: i64,
    /// Hooks whose URL another hook of the same place has too (each delivery arrives
    /// twice): the copies beyond the first.
    pub duplicates: i64,
}

/// One credential's request budget. Bitbucket counts per user (Basic: API tokens,
/// passwords) or per access token, so every connection with the same credential on the
/// same server shares one budget, whatever each asks for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// Requests per hour the operator spends at most: the smallest rateLimit among the
    /// connections sharing the budget, or less where Bitbucket reported less.
    pub requests_per_hour: i64,
    /// How many connections share it.
    pub shared_by: i64,
    /// What Bitbucket reported of its limits (Cloud sends X-RateLimit-* headers to
    /// access tokens on the scaled /2.0/repositories group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<ReportedLimit>,
    /// Requests taken from the budget over the last hour (by whole minutes, by every
    /// connection sharing it), by what they were for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_last_hour: Option<BudgetSpending>,
    /// Requests waiting for their turn when this status was written (changes go before
    /// drift checks, drift checks before health polls; the metric
    /// bbwo_bitbucket_budget_queued follows it live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<i64>,
    /// How often each repository's hooks are compared with Bitbucket ("10m", "4h"): the
    /// operator's --resync-period, longer when one listing per repository that often
    /// would take more than half of this budget (the rest stays free for changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_every: Option<String>,
}

/// Where a budget's requests went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpending {
    /// Every request taken, the sum of the others.
    pub total: i64,
    /// Creates, updates and deletes of hooks.
    pub writes: i64,
    /// Listings of a place's hooks (Data Center's statistics come with them).
    pub listings: i64,
    /// Data Center statistics read apart and on-demand test deliveries.
    pub health: i64,
    /// Credential checks and event catalogues.
    pub verification: i64,
    /// Repository and project listings (WebhookSet discovery).
    pub discovery: i64,
}

/// A limit as Bitbucket reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportedLimit {
    /// X-RateLimit-Resource ("api": the scaled group); empty when not named.
    pub resource: String,
    /// X-RateLimit-Limit: requests per hour.
    pub limit: i64,
    /// X-RateLimit-NearLimit: less than a fifth of the allowance remains.
    pub near_limit: bool,
    /// When it was last reported.
    pub time: Time,
}

/// How a connection's credential was proven.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerifiedBy {
    Identity,
    Repository,
    Unverified,
}

/// Observed state of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the credentials were last verified against Bitbucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    /// How the credential was last proven: Identity (Bitbucket said whose it is),
    /// Repository (the identity call was refused, but listing the hooks of a repository
    /// the connection serves succeeded: see verifiedRepository), or Unverified (the
    /// identity call was refused and no Webhook uses the connection yet; its first
    /// Webhook's requests will prove or refute the credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<VerifiedBy>,
    /// The repository whose hook listing proved the credential (verifiedBy Repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_repository: Option<String>,
    /// The request budget this connection spends from, as it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// What the hook listings the operator already makes for this connection's Webhooks
    /// show (no request of its own): hooks no Webhook manages, and URLs twice on one place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HookCounts>,
    /// Ready: the credentials were verified with one cheap call. RateLimited (only while
    /// it lasts): Bitbucket answered 429 and every request with this credential waits
    /// until the time in its message. InUse (only while it is being deleted): Webhooks
    /// still use it, and it stays until their cleanup is done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
