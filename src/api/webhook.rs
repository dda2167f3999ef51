//! The `Webhook` custom resource: one webhook on one Bitbucket repository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::{conditions_schema, default_true};

/// Why `repository` and `connectionRef` cannot change, and what to do instead.
const MOVE_MESSAGE: &str = "repository and connectionRef cannot change: a hook does not move. Create a Webhook for the new place and delete this one (its deletionPolicy decides whether the old hook is removed); to hand the same hook over, set deletionPolicy: Orphan first and give the new Webhook the same url so it adopts the hook";

/// Desired state of a Bitbucket repository webhook.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bitbucket.hooks.dev",
    version = "v1alpha1",
    kind = "Webhook",
    doc = "A Bitbucket repository webhook the operator keeps in sync with Bitbucket.",
    namespaced,
    status = "WebhookStatus",
    shortname = "bbhook",
    category = "bitbucket",
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".spec.repository"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","priority":1,"jsonPath":".spec.scope"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".spec.active"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Delivery","type":"string","jsonPath":".status.delivery.health"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Webhook ID","type":"string","priority":1,"jsonPath":".status.webhookId"}"#,
    printcolumn = r#"{"name":"Origin","type":"string","priority":1,"jsonPath":".status.origin"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(r"self.scope == 'Repository' ? self.repository.matches('^~?[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$') : self.repository.matches('^~?[A-Za-z0-9{][A-Za-z0-9._{}-]*$')").message("repository must look like \"workspace/repo_slug\" (Cloud) or \"PROJECT/repo_slug\" (Data Center) for scope Repository, and be a workspace (Cloud) or a project key (Data Center) alone for scope Workspace or Project").reason(Reason::FieldValueInvalid))]
pub struct WebhookSpec {
    /// The BitbucketConnection (same namespace) or ClusterBitbucketConnection that says
    /// which Bitbucket to talk to and with which credentials. Cannot change (see
    /// `repository` for how to move a hook).
    #[x_kube(validation = Rule::new("self == oldSelf").message(MOVE_MESSAGE).reason(Reason::FieldValueForbidden))]
    pub connection_ref: ConnectionRef,

    /// Where the webhook lives. With scope Repository (the default): "workspace/repo_slug"
    /// on Bitbucket Cloud, "PROJECT/repo_slug" on Bitbucket Data Center (a personal project
    /// is "~USER/slug"). With scope Workspace: the Cloud workspace alone; with scope
    /// Project: the Data Center project key alone.
    /// Cannot change: a hook does not move. To move one, create a Webhook for the new
    /// repository (or connection) and delete this one; its deletionPolicy decides whether
    /// the old hook is removed. To hand a hook to another Webhook unchanged, set
    /// deletionPolicy Orphan, delete this one, and create the new one with the same URL:
    /// it adopts the hook.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self == oldSelf").message(MOVE_MESSAGE).reason(Reason::FieldValueForbidden))]
    pub repository: String,

    /// The level of the hook: "Repository" (default) fires for one repository;
    /// "Workspace" (Cloud, workspace owners) and "Project" (Data Center and Post Webhooks,
    /// PROJECT_ADMIN) fire for every repository under it, and `repository` then names the
    /// workspace or project. Cannot change.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("scope cannot change: create a Webhook at the new level and delete this one").reason(Reason::FieldValueForbidden))]
    pub scope: Scope,

    /// Everything else about the hook; a WebhookSet's template holds the same.
    #[serde(flatten)]
    pub settings: WebhookSettings,
}

/// A webhook's settings apart from where it lives: what `Webhook` and a `WebhookSet`'s
/// template share.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlFrom)").message("set exactly one of url and urlFrom").reason(Reason::FieldValueInvalid))]
pub struct WebhookSettings {
    /// The webhook's name as Bitbucket shows it (Cloud "description", Data Center "name").
    /// Defaults to "<namespace>/<name>" of this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("title must not contain control characters (line breaks, tabs, ...): Bitbucket shows it on one line").reason(Reason::FieldValueInvalid))]
    pub title: Option<String>,

    /// Where Bitbucket delivers events: an absolute http:// or https:// URL. It must not
    /// carry credentials; use `secretRef` to sign deliveries instead. Exactly one of `url`
    /// and `urlFrom`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("url must be an absolute http:// or https:// URL with a host").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')").message("url must not contain a user name or password; sign deliveries with secretRef instead").reason(Reason::FieldValueForbidden))]
    pub url: String,

    /// Where to read the URL instead of writing it here: a Flux `Receiver`, or a key of a
    /// ConfigMap or Secret in the Webhook's namespace. The hook follows it when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<UrlSource>,

    /// The events that trigger a delivery, in the vocabulary of the connection's flavor:
    /// Cloud "repo:push", "pullrequest:created", ...; Data Center "repo:refs_changed",
    /// "pr:opened", ...; Post Webhooks "ABSTRACT_REPOSITORY_REFS_CHANGED",
    /// "PULL_REQUEST_OPENED", .... The operator checks the names against the flavor's
    /// catalogue and suggests the right name for one from another flavor. Defaults to
    /// the flavor's push event ("repo:push", "repo:refs_changed" or
    /// "ABSTRACT_REPOSITORY_REFS_CHANGED"). Each event may appear only once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        inner(regex(pattern = r"^([a-z_]+(:[a-z_]+)+|[A-Z][A-Z_]*)$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Option<Vec<String>>,

    /// Whether Bitbucket sends deliveries. An inactive webhook stays configured but silent.
    #[serde(default = "default_true")]
    pub active: bool,

    /// Let Bitbucket deliver to an https:// URL whose certificate it cannot verify
    /// (self-signed, expired, wrong host). Emits a Warning event while true.
    #[serde(default)]
    pub skip_cert_verification: bool,

    /// The Secret key holding the HMAC secret Bitbucket signs deliveries with
    /// (the X-Hub-Signature header). Without it deliveries are unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<WebhookSecretRef>,

    /// What happens on Bitbucket when this object is deleted: "Delete" removes the
    /// webhook, "Orphan" leaves it in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Whether an existing webhook on the repository with the same URL is taken over
    /// instead of creating a second one: "IfMatchingURL" (default) or "Never".
    #[serde(default)]
    pub adoption: AdoptionPolicy,

    /// What to do when the webhook was changed in Bitbucket: "Enforce" puts it back,
    /// "Report" only sets Synced=False with reason Drifted.
    #[serde(default)]
    pub drift_policy: DriftPolicy,

    /// "Manage" creates, updates and deletes the webhook; "ObserveOnly" never writes to
    /// Bitbucket and only reports what is there.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// The endpoint probe for this Webhook; overrides the connection's `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
}

/// The endpoint probe: a signed `diagnostics:ping` POST to the webhook URL on a schedule,
/// recording reachability, HTTP status, latency and TLS certificate expiry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Whether to probe.
    pub enabled: bool,
    /// Seconds between probes (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 86400))]
    pub interval_seconds: Option<i32>,
}

/// The level a hook lives at.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    JsonSchema,
)]
pub enum Scope {
    #[default]
    Repository,
    /// A Data Center project (built-in webhooks or Post Webhooks project configurations).
    Project,
    /// A Cloud workspace.
    Workspace,
}

/// A reference to the connection a Webhook uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRef {
    /// "BitbucketConnection" (in the Webhook's namespace, the default) or
    /// "ClusterBitbucketConnection".
    #[serde(default)]
    pub kind: ConnectionKind,
    /// Name of the connection object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which kind of connection object a Webhook references.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    JsonSchema,
)]
pub enum ConnectionKind {
    #[default]
    BitbucketConnection,
    ClusterBitbucketConnection,
}

/// Where a Webhook's URL comes from: exactly one of the three.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.receiverRef), has(self.configMapKeyRef), has(self.secretKeyRef)].filter(x, x).size() == 1").message("urlFrom takes exactly one of receiverRef, configMapKeyRef and secretKeyRef").reason(Reason::FieldValueInvalid))]
pub struct UrlSource {
    /// A Flux Receiver (notification.toolkit.fluxcd.io/v1) in the Webhook's namespace: the
    /// URL is `baseURL` followed by the Receiver's `status.webhookPath`, and without a
    /// `secretRef` the Receiver's token (its Secret's key "token") signs deliveries, so
    /// Bitbucket signs what Flux verifies. The Webhook waits while the Receiver is not
    /// Ready. Receiver type "bitbucket" verifies Cloud's and Data Center's X-Hub-Signature;
    /// "generic" verifies nothing (its path is the secret); other types are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_ref: Option<ReceiverRef>,
    /// A ConfigMap key holding the URL (an Argo Events webhook EventSource, a Tekton
    /// EventListener behind an ingress, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// A Secret key holding the URL (when the URL itself is the receiver's secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

/// A Flux Receiver and where it is reachable from Bitbucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverRef {
    /// The Receiver's name, in the Webhook's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The externally reachable URL the notification-controller's receiver is served
    /// under (its ingress), e.g. "https://flux-webhook.example.com". Defaults to the
    /// connection's `receiverBaseURL`.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("baseURL must be an absolute http:// or https:// URL with a host").reason(Reason::FieldValueInvalid))]
    pub base_url: Option<String>,
}

/// A key of a ConfigMap or Secret in the Webhook's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// The ConfigMap's or Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key whose value is the URL.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where the webhook's signing secret lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretRef {
    /// Name of a Secret in the Webhook's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret whose value is the HMAC secret (at most 128 characters).
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Create the Secret with a random value when it does not exist.
    #[serde(default)]
    pub generate: bool,
}

fn default_secret_key() -> String {
    "secret".to_owned()
}

/// What happens on Bitbucket when a Webhook object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Orphan,
}

/// Whether a matching webhook that already exists in Bitbucket is adopted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AdoptionPolicy {
    #[default]
    #[serde(rename = "IfMatchingURL")]
    IfMatchingUrl,
    Never,
}

/// How changes made in Bitbucket are handled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DriftPolicy {
    #[default]
    Enforce,
    Report,
}

/// Whether the operator writes to Bitbucket at all.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ManagementPolicy {
    #[default]
    Manage,
    ObserveOnly,
}

/// Observed state of the webhook, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Bitbucket's identifier of the webhook: the Cloud uuid ("{...}") or the Data Center id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// How this Webhook came to manage its hook: Created (the operator created it) or
    /// Adopted (an existing hook with the same URL was taken over; deleting the Webhook
    /// deletes it too unless deletionPolicy is Orphan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<HookOrigin>,
    /// A page in Bitbucket where a person can look at the repository's webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When a comparison with Bitbucket last wrote this status. The hook is compared every
    /// resync period, but a comparison that finds nothing new rewrites the status only
    /// once this is older than the operator's --status-refresh-period (1h by default), so
    /// it may lag the last comparison by that much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Which version of the signing Secret (its uid and resourceVersion, never a value or
    /// hash) was last pushed to Bitbucket, so a rotation is noticed where Bitbucket keeps
    /// the secret write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<String>,
    /// Whether deliveries reach their target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
    /// Ready, Synced and Delivering, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// How a Webhook came to manage its hook.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HookOrigin {
    /// The operator created the hook.
    Created,
    /// The hook existed and was adopted.
    Adopted,
}

/// Delivery health as reported by Bitbucket and the optional endpoint probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// Healthy, Degraded, Failing or Unknown.
    #[serde(default)]
    pub health: DeliveryHealth,
    /// When a delivery last succeeded (2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// When a delivery last failed (non-2xx answer, or no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Bitbucket's description of the last failed delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Successful deliveries in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes: Option<i64>,
    /// Deliveries answered with a non-2xx status in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
    /// Deliveries that got no answer (connection, TLS, timeout) in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<i64>,
    /// The period the counts cover, as Bitbucket reports it (for example "168h"); absent
    /// while Bitbucket reports no delivery at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The last endpoint probe, when probing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointStatus>,
    /// The last on-demand test delivery (bitbucket.hooks.dev/test-requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<TestDeliveryStatus>,
}

/// Overall delivery health.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeliveryHealth {
    Healthy,
    Degraded,
    Failing,
    #[default]
    Unknown,
}

/// What the endpoint probe saw.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// Whether the URL answered at all.
    pub reachable: bool,
    /// What happened, in a sentence (why it was refused or unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The HTTP status of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// Time to the answer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// When the target's TLS certificate expires (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_expires_at: Option<Time>,
    /// When the probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
}

/// The outcome of the last test delivery Bitbucket made on request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestDeliveryStatus {
    /// The annotation value the test answered.
    pub request: String,
    /// The HTTP status the target answered, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// A short description of the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the test ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}
