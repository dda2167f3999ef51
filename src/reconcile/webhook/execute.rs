//! Execute: the only place that writes to Bitbucket, carrying out a plan (or a deletion).

use std::time::Duration;

use kube::Api;

use super::Done;
use super::observe::{Observation, Target};
use sha2::Digest;

use crate::api::Webhook;
use crate::bitbucket::{self, Deleted, HookSpec, SecretChange, WebhookBackend};
use crate::identity::ConnectionPlace;
use crate::reconcile::plan::{Desired, Field, Plan};
use crate::reconcile::{Context, Error, finalizer};

/// Carries out the plan; returns the hook's id (None: there is none) and what was done.
#[tracing::instrument(skip_all, fields(plan = plan_name(&observation.plan)))]
pub async fn execute(
    target: &Target<'_>,
    desired: &Desired,
    observation: &Observation,
    api: &Api<Webhook>,
    ctx: &Context,
) -> Result<(Option<String>, Done), Error> {
    // A hook about to be recorded or written is this Webhook's: the finalizer first.
    if !matches!(observation.plan, Plan::Missing { .. } | Plan::Create) {
        finalizer::claim(api, target.w, None).await?;
    }
    Ok(match &observation.plan {
        Plan::InSync { id, adopted: false } => (Some(id.clone()), Done::InSync),
        Plan::InSync { id, adopted: true } => (Some(id.clone()), Done::Adopted),
        Plan::Drifted { id, fields } => (Some(id.clone()), Done::Drifted(fields.clone())),
        Plan::Missing { deleted } => (None, Done::Missing { deleted: *deleted }),
        Plan::Update {
            id,
            adopted,
            fields,
        } => {
            let current = observation.hook(id).ok_or_else(|| {
                Error::Bitbucket(bitbucket::Error::Unexpected {
                    message: format!("hook {id} is not in the listing it was planned from"),
                })
            })?;
            let spec = hook_spec(desired, secret_change(desired, fields));
            let hook = match target
                .backend
                .update_hook(target.place, current, &spec)
                .await
            {
                Ok(hook) => hook,
                Err(e) => {
                    // Bitbucket may have applied it and lost the answer: the next look
                    // lists again rather than trusting the old copy and sending it twice.
                    ctx.lists.forget(&observation.key).await;
                    return Err(e.into());
                }
            };
            ctx.lists.upsert(&observation.key, hook.clone()).await;
            let done = if *adopted {
                Done::Adopted
            } else {
                Done::Updated(fields.clone())
            };
            (Some(hook.id), done)
        }
        Plan::Create => {
            let id = create(target, desired, api, &observation.key, ctx).await?;
            (Some(id), Done::Created)
        }
    })
}

fn plan_name(plan: &Plan) -> &'static str {
    match plan {
        Plan::InSync { .. } => "InSync",
        Plan::Drifted { .. } => "Drifted",
        Plan::Missing { .. } => "Missing",
        Plan::Update { .. } => "Update",
        Plan::Create => "Create",
    }
}

/// Creates the hook behind the pending-create mark (set with the finalizer, if missing).
async fn create(
    target: &Target<'_>,
    desired: &Desired,
    api: &Api<Webhook>,
    key: &ConnectionPlace,
    ctx: &Context,
) -> Result<String, Error> {
    finalizer::claim(api, target.w, Some(&pending_mark(target.w, &desired.url))).await?;
    let secret = desired
        .secret
        .as_ref()
        .map_or(SecretChange::Keep, |s| SecretChange::Set(s.value.clone()));
    let spec = hook_spec(desired, secret);
    let uid = kube::ResourceExt::uid(target.w).unwrap_or_default();
    let hook = match target.backend.create_hook(target.place, &spec).await {
        Ok(hook) => hook,
        // Refused before Bitbucket acted (a spent budget, a 429): nothing was created, so
        // the mark goes; otherwise the next try would re-list first.
        Err(e @ bitbucket::Error::RateLimited { .. }) => {
            ctx.lists.create_settled(&uid);
            finalizer::clear_mark(api, target.w).await?;
            return Err(e.into());
        }
        Err(e) => {
            // Bitbucket may have made it and the answer was lost: the listing that decides
            // the next try must be one taken after this (any in the cache from now on is).
            ctx.lists.create_lost(key, &uid).await;
            return Err(Error::about_place(target.place, e));
        }
    };
    ctx.lists.create_settled(&uid);
    ctx.lists.upsert(key, hook.clone()).await;
    Ok(hook.id)
}

fn hook_spec(desired: &Desired, secret: SecretChange) -> HookSpec {
    HookSpec {
        title: desired.title.clone(),
        url: desired.url.clone(),
        active: desired.active,
        events: desired.events.clone(),
        secret,
        skip_cert_verification: desired.skip_cert_verification,
    }
}

fn secret_change(desired: &Desired, fields: &[Field]) -> SecretChange {
    match (&desired.secret, fields.contains(&Field::Secret)) {
        (_, false) => SecretChange::Keep,
        (Some(s), true) => SecretChange::Set(s.value.clone()),
        (None, true) => SecretChange::Remove,
    }
}

/// What the pending-create mark says of the URL a create is for: the URL, or with urlFrom
/// (a Receiver's path, a Secret's value) its SHA-256 digest, which `Victim` matches too.
pub fn pending_mark(w: &Webhook, url: &str) -> String {
    if w.spec.settings.url_from.is_none() {
        return url.to_owned();
    }
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(url.as_bytes()))
    )
}

/// Whether a hook's URL is what a pending mark names.
fn marked(mark: &str, url: &str) -> bool {
    match mark.strip_prefix("sha256:") {
        Some(digest) => hex::encode(sha2::Sha256::digest(url.as_bytes())) == digest,
        None => mark == url,
    }
}

/// Which hook a deletion removes.
#[derive(Debug, PartialEq)]
pub enum Victim {
    Id(String),
    /// Created, but the id never reached status: the hook with the URL the pending mark
    /// names (the URL or its digest) is ours.
    WithUrl(String),
}

/// Deletes the hook; returns what happened, for the Event.
#[tracing::instrument(skip_all, fields(place = %place))]
pub async fn delete(
    backend: &dyn WebhookBackend,
    place: &bitbucket::Place,
    victim: Victim,
    key: &ConnectionPlace,
    ctx: &Context,
) -> Result<String, Error> {
    let id = match victim {
        Victim::Id(id) => id,
        Victim::WithUrl(url) => {
            let (hooks, _) =
                super::observe::listing(backend, place, key, Duration::ZERO, ctx).await?;
            match hooks.into_iter().find(|h| marked(&url, &h.url)) {
                Some(h) => h.id,
                None => {
                    return Ok(format!(
                        "no hook with this URL on {place}: nothing to delete"
                    ));
                }
            }
        }
    };
    let outcome = match backend.delete_hook(place, &id).await {
        Ok(outcome) => outcome,
        // The repository itself is gone: so is the hook.
        Err(bitbucket::Error::NotFound { .. }) => Deleted::AlreadyGone,
        Err(e) => return Err(e.into()),
    };
    // Gone from every connection's listing of this place, and remembered: a Webhook
    // elsewhere may have adopted it.
    ctx.lists.deleted(key, &id).await;
    ctx.handover.deleted(&id);
    Ok(match outcome {
        Deleted::Removed => format!("deleted hook {id} from {place}"),
        Deleted::AlreadyGone => format!("hook {id} was already gone from {place}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::webhook::fixture::webhook;

    #[test]
    fn a_url_from_elsewhere_is_marked_by_its_digest_and_still_found() {
        let url = "https://flux.example.com/hook/abc";
        let plain = webhook(serde_json::json!({}), &[]);
        assert_eq!(pending_mark(&plain, url), url);
        let bound = webhook(
            serde_json::json!({ "url": "", "urlFrom": { "receiverRef": { "name": "ci" } } }),
            &[],
        );
        let mark = pending_mark(&bound, url);
        assert!(
            mark.starts_with("sha256:") && !mark.contains("abc"),
            "{mark}"
        );
        assert!(marked(&mark, url));
        assert!(!marked(&mark, "https://flux.example.com/hook/other"));
        assert!(marked(url, url));
    }
}
