//! The one way each reconciler writes what it found: its object's status by server-side
//! apply, and Events (a [`Note`] each, its reason a [`Reason`]).

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde::Serialize;
use serde_json::json;

use super::{Context, Error};
use crate::api::{FIELD_MANAGER, Reason};

/// An Event to publish about an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: Reason,
    pub action: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: Reason, action: &'static str, message: String) -> Note {
        Note {
            warning: false,
            reason,
            action,
            message,
        }
    }

    pub fn warning(reason: Reason, action: &'static str, message: String) -> Note {
        Note {
            warning: true,
            reason,
            action,
            message,
        }
    }

    pub fn type_(&self) -> EventType {
        if self.warning {
            EventType::Warning
        } else {
            EventType::Normal
        }
    }
}

/// Applies `status` as the whole status of the object `name` (the operator is its one
/// manager: conditions absent now are removed).
#[tracing::instrument(skip_all)]
pub async fn status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Publishes `notes` about `obj`; a failure is logged (an Event is not worth a retry).
pub async fn events<K>(recorder: &Recorder, obj: &K, notes: impl IntoIterator<Item = Note>)
where
    K: Resource<DynamicType = ()>,
{
    let reference = obj.object_ref(&());
    for note in notes {
        let event = Event {
            type_: note.type_(),
            reason: note.reason.as_str().to_owned(),
            note: Some(note.message),
            action: note.action.to_owned(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "cannot publish an event");
        }
    }
}

/// The error policy of every controller: log, back off (or wait as Bitbucket asked).
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    log_failure(obj, error);
    Action::requeue(super::requeue_after(ctx, &super::object_key(obj), error))
}

/// Logs a failed reconcile of `obj`.
pub fn log_failure<K: Resource<DynamicType = ()>>(obj: &K, error: &Error) {
    let key = super::object_key(obj);
    tracing::warn!(object = %key, kind = %K::kind(&()), reason = %error.reason(), error = %error, "reconcile failed");
}
