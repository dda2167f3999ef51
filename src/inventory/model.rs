//! What `inventory` reports, as written to JSON (`--output json`, schema in
//! docs/inventory.schema.json) and read back from its `--state` file. No secret is ever
//! part of it: a hook's secret is only said to be set or not.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::DeliveryHealth;
use crate::bitbucket::{DeliveryStats, Invocation, Place, RemoteHook, RepoRef, SecretState};

/// The schema this output follows; a change that breaks readers changes it.
pub const SCHEMA: &str = "bitbucket-webhook-operator/inventory/v1";

/// Every hook of the places read, assessed.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Always "bitbucket-webhook-operator/inventory/v1".
    pub schema: String,
    /// When the inventory was made (RFC 3339).
    pub generated_at: String,
    /// Cloud, DataCenter or PostWebhooks.
    pub flavor: String,
    /// The API root the hooks were read from.
    pub server: String,
    /// What was read, in words ("workspace acme", "every project").
    pub scope: String,
    /// False when some place could not be read (see `places[].error`).
    pub complete: bool,
    /// Whether the cluster was asked which Webhook manages each hook. When false, no hook is
    /// flagged Unmanaged and `managedBy` is absent everywhere.
    pub cluster_read: bool,
    /// Whether endpoints were probed (`--probe`).
    pub probed: bool,
    /// Requests made to Bitbucket by this run (a resumed run counts only its own).
    pub requests: u64,
    /// The pace the run kept.
    pub requests_per_hour: u32,
    pub totals: Totals,
    /// Every place read or tried, in the order read.
    pub places: Vec<PlaceReport>,
    /// Every hook found, by place.
    pub hooks: Vec<Hook>,
}

/// Counts over `hooks`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub hooks: u64,
    pub places: u64,
    /// Places that could not be read.
    pub unreadable_places: u64,
    /// Hooks a Webhook manages (0 when the cluster was not read).
    pub managed: u64,
    /// Hooks with at least one flag.
    pub flagged: u64,
    /// Hooks per delivery health (Healthy, Degraded, Failing, Unknown).
    pub by_health: BTreeMap<String, u64>,
    /// Hooks per flag.
    pub by_flag: BTreeMap<String, u64>,
}

/// Where hooks live.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PlaceName {
    /// Repository, Project or Workspace.
    pub kind: String,
    /// "owner/slug" for a repository, the key or workspace otherwise.
    pub name: String,
}

impl PlaceName {
    pub fn of(place: &Place) -> PlaceName {
        let (kind, name) = match place {
            Place::Repository(r) => ("Repository", r.to_string()),
            Place::Project(k) => ("Project", k.clone()),
            Place::Workspace(w) => ("Workspace", w.clone()),
        };
        PlaceName {
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn place(&self) -> Option<Place> {
        match self.kind.as_str() {
            "Repository" => RepoRef::parse(&self.name).map(Place::Repository),
            "Project" => Some(Place::Project(self.name.clone())),
            "Workspace" => Some(Place::Workspace(self.name.clone())),
            _ => None,
        }
    }
}

/// One place and what reading it gave.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaceReport {
    pub place: PlaceName,
    /// How many hooks it has (absent when it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<u64>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where a person sees its hooks in Bitbucket.
    pub page: String,
}

/// One delivery as Data Center's statistics report it.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// RFC 3339.
    pub at: String,
    pub event: String,
    /// SUCCESS, FAILURE (non-2xx answer) or ERROR (no answer).
    pub outcome: String,
    pub description: String,
}

/// Data Center's delivery statistics of a hook, as listed.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub successes: u64,
    pub failures: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Delivery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Delivery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Delivery>,
}

impl Statistics {
    pub fn of(stats: &DeliveryStats) -> Statistics {
        let one = |i: &Option<Invocation>| {
            i.as_ref().map(|i| Delivery {
                at: i.at.to_string(),
                event: i.event.clone(),
                outcome: i.outcome.clone(),
                description: i.description.clone(),
            })
        };
        Statistics {
            successes: stats.successes,
            failures: stats.failures,
            errors: stats.errors,
            last_success: one(&stats.last_success),
            last_failure: one(&stats.last_failure),
            last_error: one(&stats.last_error),
        }
    }

    /// Back to the client's type, for the operator's own health verdict.
    pub fn stats(&self) -> DeliveryStats {
        let one = |d: &Option<Delivery>| {
            d.as_ref().and_then(|d| {
                Some(Invocation {
                    at: d.at.parse().ok()?,
                    event: d.event.clone(),
                    outcome: d.outcome.clone(),
                    description: d.description.clone(),
                })
            })
        };
        DeliveryStats {
            successes: self.successes,
            failures: self.failures,
            errors: self.errors,
            window: None,
            last_success: one(&self.last_success),
            last_failure: one(&self.last_failure),
            last_error: one(&self.last_error),
        }
    }
}

/// A hook as listed: what the `--state` file keeps between runs.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub id: String,
    pub title: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    /// Whether the hook signs its deliveries (the secret itself is never read out).
    pub signed: bool,
    pub skip_cert_verification: bool,
    /// Data Center only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Statistics>,
}

impl Listed {
    pub fn of(hook: &RemoteHook) -> Listed {
        Listed {
            id: hook.id.clone(),
            title: hook.title.clone(),
            url: hook.url.clone(),
            events: hook.events.clone(),
            active: hook.active,
            signed: !matches!(hook.secret, SecretState::Unset),
            skip_cert_verification: hook.skip_cert_verification,
            statistics: hook.stats.as_ref().map(Statistics::of),
        }
    }
}

/// The Kubernetes object that manages a hook.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    /// Webhook, or WebhookSet when a set's Webhook manages it.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The Webhook itself (the set's child, for a WebhookSet).
    pub webhook: String,
}

/// What the endpoint probe saw.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// Answered, Unreachable, CertificateRejected or Refused (the SSRF guard).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
    pub message: String,
}

/// Something wrong with a hook.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Flag {
    /// No Webhook in the cluster manages it.
    Unmanaged,
    /// Another hook of the same place has the same URL: each event is delivered twice.
    DuplicateUrl,
    /// A project or workspace hook above its repository has the same URL.
    InheritedDuplicate,
    /// It is switched off.
    Inactive,
    /// Its last delivery failed (Data Center statistics).
    Failing,
    /// Nothing was ever delivered to it in Bitbucket's window (Data Center statistics).
    NeverDelivered,
    /// The probe got no answer, a 5xx, or a certificate that fails verification.
    Unreachable,
    /// The endpoint's TLS certificate expires within 14 days (or has).
    CertificateExpiring,
    /// It subscribes to events this Bitbucket does not have (any more).
    UnknownEvents,
}

impl Flag {
    pub const ALL: [Flag; 9] = [
        Flag::Unmanaged,
        Flag::DuplicateUrl,
        Flag::InheritedDuplicate,
        Flag::Inactive,
        Flag::Failing,
        Flag::NeverDelivered,
        Flag::Unreachable,
        Flag::CertificateExpiring,
        Flag::UnknownEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flag::Unmanaged => "Unmanaged",
            Flag::DuplicateUrl => "DuplicateUrl",
            Flag::InheritedDuplicate => "InheritedDuplicate",
            Flag::Inactive => "Inactive",
            Flag::Failing => "Failing",
            Flag::NeverDelivered => "NeverDelivered",
            Flag::Unreachable => "Unreachable",
            Flag::CertificateExpiring => "CertificateExpiring",
            Flag::UnknownEvents => "UnknownEvents",
        }
    }
}

/// One flag, why, and what fixes it.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub flag: Flag,
    pub message: String,
    /// A command (or, where none exists, the page) that fixes it.
    pub fix: String,
}

/// One hook, assessed.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub place: PlaceName,
    #[serde(flatten)]
    pub listed: Listed,
    /// Absent when the cluster was not read or no Webhook manages the hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<Manager>,
    /// How deliveries fare, by the operator's own rules (statistics and probe).
    pub health: DeliveryHealth,
    pub health_message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    pub flags: Vec<Finding>,
    /// Where a person sees the hook in Bitbucket.
    pub page: String,
}

/// The JSON Schema of [`Inventory`], as docs/inventory.schema.json holds it.
pub fn schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Inventory)).unwrap_or_default();
    schema["$id"] = serde_json::json!(concat!(
        env!("CARGO_PKG_REPOSITORY"),
        "/blob/main/docs/inventory.schema.json"
    ));
    schema["title"] = serde_json::json!("bitbucket-webhook-operator inventory, v1");
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented schema is the one the code writes; `BBWO_WRITE_SCHEMA=1 cargo test
    /// --lib inventory::model` rewrites the file after a change.
    #[test]
    fn the_documented_schema_is_the_written_one() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inventory.schema.json");
        let text = serde_json::to_string_pretty(&schema()).expect("schema") + "\n";
        if std::env::var_os("BBWO_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &text).expect("write the schema");
        }
        let documented = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            documented == text,
            "docs/inventory.schema.json is out of date: run BBWO_WRITE_SCHEMA=1 cargo test --lib inventory::model"
        );
    }
}
