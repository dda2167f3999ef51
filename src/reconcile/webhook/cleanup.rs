//! Cleanup: a pure deletion plan (next to `plan()`), then the one deletion it may ask for.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::execute::{self, Victim};
use super::list_key;
use crate::api::{
    ConnectionRef, DeletionPolicy, FORCE_ORPHAN_ANNOTATION, ManagementPolicy,
    PENDING_CREATE_ANNOTATION, Reason, Webhook,
};
use crate::reconcile::publish::{self, Note};
use crate::reconcile::{Context, Error};

/// What deleting a Webhook does to its hook.
#[derive(Debug, PartialEq)]
pub enum Deletion {
    /// Annotated force-orphan: released at once, whatever the hook's state.
    ForceOrphan { id: Option<String> },
    /// deletionPolicy Orphan or managementPolicy ObserveOnly: the hook stays.
    Orphan { id: Option<String> },
    /// Another Webhook holds the claim (this one lost a Conflict): never delete.
    NotOwned { id: Option<String>, holder: String },
    /// No hook was ever created or recorded.
    Nothing,
    /// Delete the hook.
    Delete(Victim),
}

/// The pure decision, from the Webhook and the current claim holder (if not this one).
pub fn deletion(w: &Webhook, holder: Option<String>) -> Deletion {
    let id = w.status.as_ref().and_then(|s| s.webhook_id.clone());
    let forced = w
        .annotations()
        .get(FORCE_ORPHAN_ANNOTATION)
        .is_some_and(|v| v == "true");
    if forced {
        return Deletion::ForceOrphan { id };
    }
    if w.spec.settings.deletion_policy == DeletionPolicy::Orphan
        || w.spec.settings.management_policy == ManagementPolicy::ObserveOnly
    {
        return Deletion::Orphan { id };
    }
    let pending = w.annotations().contains_key(PENDING_CREATE_ANNOTATION);
    if id.is_none() && !pending {
        return Deletion::Nothing;
    }
    // A Conflict loser never owned the hook (even one that recorded its id before the
    // claims were shared across namespaces): the older Webhook keeps it.
    if let Some(holder) = holder {
        return Deletion::NotOwned { id, holder };
    }
    Deletion::Delete(match id {
        Some(id) => Victim::Id(id),
        // The mark holds the URL the create was for (urlFrom's may have moved since).
        None => Victim::WithUrl(
            w.annotations()
                .get(PENDING_CREATE_ANNOTATION)
                .filter(|url| !url.is_empty())
                .cloned()
                .unwrap_or_else(|| w.spec.settings.url.clone()),
        ),
    })
}

/// Runs the deletion plan: the Event says what happened to the hook.
#[tracing::instrument(skip_all, fields(webhook = %super::object_key(w)))]
pub async fn cleanup(w: &Webhook, ctx: &Context) -> Result<Action, Error> {
    let uid = w.uid().unwrap_or_default();
    ctx.health.forget(&uid);
    ctx.metrics.webhook(&uid, None);
    ctx.forget(&super::object_key(w), &uid);
    let shown = |id: &Option<String>| id.clone().unwrap_or_else(|| "(none)".to_owned());
    // Not while a Webhook this one moved to is adopting the hook.
    let _turn = ctx.handover.turn(w).await;
    let holder = match ctx.claims.holder(w) {
        Some(holder) => Some(holder),
        None => holder_elsewhere(w, ctx).await,
    };
    let note = match deletion(w, holder) {
        Deletion::Nothing => return Ok(Action::await_change()),
        Deletion::ForceOrphan { id } => Note::warning(
            Reason::ForceOrphaned,
            "Delete",
            format!(
                "{FORCE_ORPHAN_ANNOTATION}=true: released without deleting hook {}",
                shown(&id)
            ),
        ),
        Deletion::Orphan { id: None } => return Ok(Action::await_change()),
        Deletion::Orphan { id: Some(id) } => Note::normal(
            Reason::Orphaned,
            "Delete",
            format!(
                "hook {id} is left on Bitbucket (deletionPolicy {:?}, managementPolicy {:?})",
                w.spec.settings.deletion_policy, w.spec.settings.management_policy
            ),
        ),
        Deletion::NotOwned { id, holder } => Note::normal(
            Reason::NotOwned,
            "Delete",
            format!(
                "hook {} is left on Bitbucket: Webhook {holder} manages it",
                shown(&id)
            ),
        ),
        Deletion::Delete(victim) => match delete(w, victim, ctx).await {
            Ok(message) => Note::normal(Reason::Deleted, "Delete", message),
            Err(e) => {
                let message = format!(
                    "cannot delete the hook: {e}; retrying with backoff. Annotate {FORCE_ORPHAN_ANNOTATION}=true to release the Webhook and leave the hook"
                );
                let note = Note::warning(Reason::DeleteFailed, "Delete", message);
                publish::events(&ctx.recorder, w, [note]).await;
                return Err(e);
            }
        },
    };
    publish::events(&ctx.recorder, w, [note]).await;
    Ok(Action::await_change())
}

/// A live Webhook that wants the same hook through another connection to the same
/// Bitbucket ("namespace/name"): a Webhook moved to another namespace is applied there
/// while this one is deleted, in no fixed order, and may already have adopted the hook.
async fn holder_elsewhere(w: &Webhook, ctx: &Context) -> Option<String> {
    let candidates = ctx.claims.elsewhere(w);
    if candidates.is_empty() {
        return None;
    }
    let mine = super::dereference::connection(w, ctx).await.ok()?.server();
    for (connection, namespace, holder) in candidates {
        let reference = ConnectionRef {
            kind: connection.kind,
            name: connection.name,
        };
        let theirs = super::dereference::connection_for(&namespace, &reference, None, ctx).await;
        if theirs.is_ok_and(|view| view.server() == mine) {
            return Some(holder);
        }
    }
    None
}

/// Finds a client for the deletion, even when the credential's Secret went first.
async fn delete(w: &Webhook, victim: Victim, ctx: &Context) -> Result<String, Error> {
    let view = super::dereference::connection(w, ctx).await?;
    let backend = match ctx.connections.backend(&ctx.secret_reader(), &view).await {
        Ok(backend) => backend,
        // Deleted together with its credential, in no fixed order: the last client built
        // for the connection still holds it.
        Err(e @ (Error::SecretNotFound { .. } | Error::SecretInvalid(_))) => ctx
            .connections
            .last(&view)
            .ok_or_else(|| Error::NoCredential { cause: Box::new(e) })?,
        Err(e) => return Err(e),
    };
    let place = super::validate::place(w, view.spec.flavor)?;
    let key = list_key(&view, &place);
    execute::delete(backend.as_ref(), &place, victim, &key, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WebhookStatus;

    fn webhook(
        id: Option<&str>,
        annotations: &[(&str, &str)],
        deletion: &str,
        management: &str,
    ) -> Webhook {
        let mut w = super::super::fixture::webhook(
            serde_json::json!({"deletionPolicy": deletion, "managementPolicy": management}),
            annotations,
        );
        w.status = Some(WebhookStatus {
            webhook_id: id.map(str::to_owned),
            ..Default::default()
        });
        w
    }

    #[test]
    fn deletion_plans() {
        let pending = [(PENDING_CREATE_ANNOTATION, "https://ci.example.com/hook")];
        let forced = [(FORCE_ORPHAN_ANNOTATION, "true")];
        let id = || Some("7".to_owned());
        let table = [
            (
                webhook(Some("7"), &[], "Delete", "Manage"),
                None,
                Deletion::Delete(Victim::Id("7".into())),
            ),
            (
                webhook(None, &pending, "Delete", "Manage"),
                None,
                Deletion::Delete(Victim::WithUrl("https://ci.example.com/hook".into())),
            ),
            (
                webhook(None, &[], "Delete", "Manage"),
                None,
                Deletion::Nothing,
            ),
            (
                webhook(Some("7"), &forced, "Delete", "Manage"),
                None,
                Deletion::ForceOrphan { id: id() },
            ),
            (
                webhook(Some("7"), &forced, "Orphan", "Manage"),
                Some("x/y"),
                Deletion::ForceOrphan { id: id() },
            ),
            (
                webhook(Some("7"), &[], "Orphan", "Manage"),
                None,
                Deletion::Orphan { id: id() },
            ),
            (
                webhook(Some("7"), &[], "Delete", "ObserveOnly"),
                None,
                Deletion::Orphan { id: id() },
            ),
            (
                webhook(Some("7"), &[], "Delete", "Manage"),
                Some("other/first"),
                Deletion::NotOwned {
                    id: id(),
                    holder: "other/first".into(),
                },
            ),
            (
                webhook(None, &pending, "Delete", "Manage"),
                Some("other/first"),
                Deletion::NotOwned {
                    id: None,
                    holder: "other/first".into(),
                },
            ),
            (
                webhook(None, &[], "Delete", "Manage"),
                Some("other/first"),
                Deletion::Nothing,
            ),
        ];
        for (i, (w, holder, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                deletion(&w, holder.map(str::to_owned)),
                expected,
                "case {i}"
            );
        }
    }
}
