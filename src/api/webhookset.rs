//! The `WebhookSet` custom resource: one declaration, one Webhook per selected repository.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::conditions_schema;
use super::webhook::{ConnectionRef, WebhookSettings};

/// Label on each Webhook a WebhookSet made: the set's name.
pub const WEBHOOKSET_LABEL: &str = "bitbucket.hooks.dev/webhookset";
/// Annotation on each Webhook a WebhookSet made: the repository it is for, as listed.
pub const REPOSITORY_ANNOTATION: &str = "bitbucket.hooks.dev/repository";
/// How many repositories `status.notReady` names at most.
pub const NOT_READY_SHOWN: usize = 20;

/// Webhooks for many repositories from one template: an explicit list, or every
/// repository of a Cloud workspace (or one of its projects) or a Data Center project that
/// the include / exclude patterns select.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bitbucket.hooks.dev",
    version = "v1alpha1",
    kind = "WebhookSet",
    doc = "Bitbucket webhooks for many repositories from one template: the operator keeps one Webhook per selected repository.",
    namespaced,
    status = "WebhookSetStatus",
    shortname = "bbhookset",
    category = "bitbucket",
    printcolumn = r#"{"name":"Selected","type":"integer","jsonPath":".status.selected"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Failing","type":"integer","jsonPath":".status.failing"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Discovered","type":"date","priority":1,"jsonPath":".status.lastDiscoveryTime"}"#
)]
#[x_kube(validation = Rule::new("has(self.repositories) != has(self.selector)").message("set exactly one of repositories (an explicit list) and selector (discovery)").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct WebhookSetSpec {
    /// The BitbucketConnection (same namespace) or ClusterBitbucketConnection every
    /// Webhook of the set uses. Cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("connectionRef cannot change: create a new WebhookSet").reason(Reason::FieldValueForbidden))]
    pub connection_ref: ConnectionRef,

    /// The repositories, each "workspace/repo_slug" (Cloud) or "PROJECT/repo_slug" (Data
    /// Center). Exclusive with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 5000),
        inner(regex(pattern = r"^~?[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub repositories: Option<Vec<String>>,

    /// Every repository of a workspace or project that the patterns select, listed again
    /// every `discoveryInterval`. Exclusive with `repositories`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<RepositorySelector>,

    /// How often the selector's repositories are listed again ("10m" by default; at
    /// least "10s"): one paged listing per interval, counted against the connection's
    /// request budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub discovery_interval: Option<String>,

    /// What each repository's Webhook looks like.
    pub template: WebhookTemplate,
}

/// Which repositories a WebhookSet discovers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.workspace) || has(self.project)").message("a selector names a workspace (Cloud) or a project (Data Center, Post Webhooks)").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct RepositorySelector {
    /// Bitbucket Cloud: the workspace whose repositories are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub workspace: Option<String>,
    /// Bitbucket Cloud: only repositories of this project (its key). Data Center and
    /// Post Webhooks: the project whose repositories are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub project: Option<String>,
    /// Glob patterns on the repository slug ("api-*", "svc-?"); a repository is selected
    /// if it matches one (none given: every repository). Case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub include: Vec<String>,
    /// Glob patterns on the slug of repositories to leave out, even when included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub exclude: Vec<String>,
}

/// A Webhook without its repository and connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTemplate {
    /// Labels and annotations every Webhook of the set carries.
    #[serde(default, skip_serializing_if = "TemplateMetadata::is_empty")]
    pub metadata: TemplateMetadata,
    /// The Webhook spec, without `repository` and `connectionRef` (the set's). Its
    /// `deletionPolicy` also decides what happens to a repository's hook when the
    /// repository leaves the selection or the set is deleted.
    pub spec: WebhookSettings,
}

/// Labels and annotations for the Webhooks of a set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct TemplateMetadata {
    /// Labels for each Webhook (the operator adds `bitbucket.hooks.dev/webhookset`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations for each Webhook (the operator adds `bitbucket.hooks.dev/repository`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl TemplateMetadata {
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// What the operator last saw of a WebhookSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSetStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Repositories selected (one Webhook each).
    #[serde(default)]
    pub selected: i32,
    /// Of those, Webhooks whose Ready condition is True.
    #[serde(default)]
    pub ready: i32,
    /// Of those, Webhooks whose deliveries fail (delivery health Failing).
    #[serde(default)]
    pub failing: i32,
    /// Of those, repositories whose Webhook is not made yet: Webhooks are made a few at
    /// a time, as fast as the connection's request budget lets each list and create its
    /// hook, so the budget is used at its limit and never beyond.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting: i32,
    /// Repositories whose Webhook is not Ready yet (the first 20, sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    /// When the selector's repositories were last listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_discovery_time: Option<Time>,
    /// Ready: every selected repository has its Webhook and each is Ready. Reconciling:
    /// Webhooks are being made or are not Ready yet, or discovery waits on Bitbucket.
    /// Stalled: the set cannot work as written (spec, connection, permissions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
