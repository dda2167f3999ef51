//! Status (pure): the new status from a sync's outcome and the health assessment, and the
//! Events that tell about it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Done, Report};
use crate::api::{
    DeliveryHealth, DeliveryStatus, HookOrigin, ManagementPolicy, Reason, Webhook, WebhookStatus,
};
use crate::health::Assessment;
use crate::reconcile::Error;
use crate::reconcile::conditions::{self, Outcome, Status};
use crate::reconcile::plan::Field;

use crate::reconcile::publish::Note;

/// `Synced`: whether the hook on Bitbucket matches the spec.
pub fn synced(result: Result<&Report, &Error>, w: &Webhook) -> Outcome {
    let r = match result {
        Ok(r) => r,
        Err(e) => return Outcome::new(Status::False, e.reason(), e.to_string()),
    };
    let policy_note = match w.spec.settings.management_policy {
        ManagementPolicy::ObserveOnly => {
            "managementPolicy ObserveOnly: nothing is written to Bitbucket"
        }
        ManagementPolicy::Manage => "driftPolicy Report: the change is reported, not undone",
    };
    let id = r.id.as_deref().unwrap_or("");
    let repo = &r.place;
    let (status, reason, message) = match &r.done {
        Done::InSync => match standing_action(w, id) {
            Some((reason, message)) => (Status::True, reason, message),
            None => (
                Status::True,
                Reason::InSync,
                format!("hook {id} on {repo} matches the spec"),
            ),
        },
        Done::Created => (
            Status::True,
            Reason::Created,
            format!("created hook {id} on {repo}"),
        ),
        Done::Adopted => (
            Status::True,
            Reason::Adopted,
            format!("adopted the existing hook {id} on {repo}, which has the same URL"),
        ),
        Done::Updated(fields) => (
            Status::True,
            Reason::Updated,
            format!("updated {} of hook {id} on {repo}", names(fields)),
        ),
        Done::Drifted(fields) => (
            Status::False,
            Reason::Drifted,
            format!(
                "hook {id} on {repo} differs from the spec in {}; {policy_note}",
                names(fields)
            ),
        ),
        Done::Missing { deleted: true } => (
            Status::False,
            Reason::Drifted,
            format!(
                "hook {} was deleted in Bitbucket; {policy_note}",
                recorded_id(w).unwrap_or("")
            ),
        ),
        Done::Missing { deleted: false } => (
            Status::False,
            Reason::NotFound,
            format!("no hook with this URL exists on {repo}; {policy_note}"),
        ),
    };
    Outcome::new(status, reason, message)
}

/// The action that brought this generation's hook in sync (created, adopted, updated),
/// as `Synced` says it: a later check that finds the hook unchanged keeps saying so,
/// rather than rewriting the status only to change the reason to InSync.
fn standing_action(w: &Webhook, id: &str) -> Option<(Reason, String)> {
    let status = w.status.as_ref()?;
    let c = conditions::find(&status.conditions, conditions::SYNCED)?;
    let reason = conditions::reason(c)?;
    let same_hook = status.webhook_id.as_deref() == Some(id);
    (Status::of(c) == Status::True
        && same_hook
        && c.observed_generation == w.metadata.generation
        && matches!(reason, Reason::Created | Reason::Adopted | Reason::Updated))
    .then(|| (reason, c.message.clone()))
}

fn names(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn recorded_id(w: &Webhook) -> Option<&str> {
    w.status.as_ref().and_then(|s| s.webhook_id.as_deref())
}

/// `Delivering`: whether deliveries reach the target, as far as anyone can tell.
pub fn delivering(result: Result<&Report, &Error>, health: Option<&Assessment>) -> Outcome {
    match (result, health) {
        (Ok(_), Some(a)) => {
            let status = match a.verdict.delivering {
                Some(true) => Status::True,
                Some(false) => Status::False,
                None => Status::Unknown,
            };
            Outcome::new(status, a.verdict.reason, a.verdict.message.clone())
        }
        (Ok(_), None) => Outcome::new(
            Status::Unknown,
            Reason::NoHook,
            "there is no hook to deliver",
        ),
        (Err(_), _) => Outcome::new(
            Status::Unknown,
            Reason::NotSynced,
            "the hook is not in sync with the spec",
        ),
    }
}

/// The conditions: Ready, Synced, Delivering, Stalled or Reconciling while true, and
/// DuplicateDeliveries while a hook the repository inherits has the same URL.
fn all_conditions(
    w: &Webhook,
    result: Result<&Report, &Error>,
    health: Option<&Assessment>,
    now: &Time,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let previous = w
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = w.metadata.generation;
    let condition = |type_: &str, outcome: &Outcome| {
        conditions::condition(previous, type_, outcome, generation, now)
    };
    let synced = synced(result, w);
    let mut all = vec![
        condition(conditions::READY, &conditions::ready(&synced)),
        condition(conditions::SYNCED, &synced),
        condition(conditions::DELIVERING, &delivering(result, health)),
    ];
    if let Some((type_, outcome)) = conditions::progress(&synced) {
        all.push(condition(type_, &outcome));
    }
    if let Ok(Report {
        inherited_duplicate: Some(message),
        ..
    }) = result
    {
        let outcome = Outcome::new(Status::True, Reason::InheritedDuplicate, message.clone());
        all.push(condition(conditions::DUPLICATE_DELIVERIES, &outcome));
    }
    all
}

/// The status to write after a reconcile.
pub fn new_status(
    w: &Webhook,
    result: Result<&Report, &Error>,
    health: Option<&Assessment>,
    now: Time,
) -> WebhookStatus {
    let previous = w.status.clone().unwrap_or_default();
    let conditions = all_conditions(w, result, health, &now);
    let delivery = match health {
        Some(a) => a.delivery.clone(),
        None => previous.delivery.clone().unwrap_or(DeliveryStatus {
            health: DeliveryHealth::Unknown,
            ..Default::default()
        }),
    };
    match result {
        Ok(r) => WebhookStatus {
            observed_generation: w.metadata.generation,
            origin: match (&r.done, &r.id) {
                (Done::Created, _) => Some(HookOrigin::Created),
                (Done::Adopted, _) => Some(HookOrigin::Adopted),
                (_, None) => None,
                (_, Some(_)) => previous.origin,
            },
            webhook_id: r.id.clone(),
            url: Some(r.page.clone()),
            last_sync_time: Some(now),
            secret_version: r.secret_version.clone(),
            delivery: Some(delivery),
            conditions,
        },
        Err(_) => WebhookStatus {
            observed_generation: w.metadata.generation,
            conditions,
            delivery: Some(delivery),
            ..previous
        },
    }
}

/// Whether the new status must be written: it says something new, or the recorded
/// `lastSyncTime` is older than `refresh` (so a restart still finds it fresh). A
/// reconcile that only confirms what status says (a watch event, a second look within
/// the period) writes nothing.
pub fn worth_writing(
    previous: Option<&WebhookStatus>,
    new: &WebhookStatus,
    refresh: std::time::Duration,
    now: jiff::Timestamp,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let recent = previous.last_sync_time.as_ref().is_some_and(|t| {
        let age = now.duration_since(t.0);
        !age.is_negative() && age.unsigned_abs() < refresh
    });
    let same = WebhookStatus {
        last_sync_time: previous.last_sync_time.clone(),
        ..new.clone()
    } == *previous;
    !(same && recent)
}

/// Events on actions and on changes of the Synced and Delivering conditions.
pub fn events(
    w: &Webhook,
    result: Result<&Report, &Error>,
    status: &WebhookStatus,
    health: Option<&Assessment>,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if let Some((ok, message)) = health.and_then(|h| h.test.as_ref()) {
        notes.push(if *ok {
            Note::normal(Reason::TestDelivered, "TestDelivery", message.clone())
        } else {
            Note::warning(Reason::TestDeliveryFailed, "TestDelivery", message.clone())
        });
    }
    let before = |type_| {
        w.status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, type_))
    };
    let after = |type_| conditions::find(&status.conditions, type_);
    let note = |c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition, action| Note {
        warning: Status::of(c) == Status::False,
        // Written from a Reason a moment ago, so it parses.
        reason: conditions::reason(c).unwrap_or(Reason::NotSynced),
        action,
        message: c.message.clone(),
    };
    if let Some(a) = after(conditions::DELIVERING)
        && Status::of(a) != Status::Unknown
        && before(conditions::DELIVERING)
            .is_none_or(|b| b.status != a.status || b.reason != a.reason)
    {
        notes.push(note(a, "CheckDelivery"));
    }
    if let Some(a) = after(conditions::SYNCED) {
        let acted = matches!(
            result,
            Ok(Report {
                done: Done::Created | Done::Adopted | Done::Updated(_),
                ..
            })
        );
        // A new status, or a new failure; not the quiet step from "Created" to "InSync".
        let changed = before(conditions::SYNCED).is_none_or(|b| {
            b.status != a.status
                || (Status::of(a) == Status::False
                    && (b.reason != a.reason || b.message != a.message))
        });
        if acted || changed {
            notes.push(note(a, "Sync"));
        }
    }
    if let Some(a) = after(conditions::DUPLICATE_DELIVERIES)
        && before(conditions::DUPLICATE_DELIVERIES).is_none_or(|b| b.message != a.message)
    {
        notes.push(Note::warning(
            Reason::InheritedDuplicate,
            "Sync",
            a.message.clone(),
        ));
    }
    let new_generation =
        w.status.as_ref().and_then(|s| s.observed_generation) != w.metadata.generation;
    if w.spec.settings.skip_cert_verification && new_generation && result.is_ok() {
        notes.push(Note::warning(
            Reason::CertificateVerificationSkipped,
            "Sync",
            "skipCertVerification is true: Bitbucket delivers to this URL without checking its TLS certificate".to_owned(),
        ));
    }
    notes
}

#[cfg(test)]
mod tests;
