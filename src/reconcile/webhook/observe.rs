//! Observe: the repository's hooks from the shared listing cache, and the plan made
//! from them with the pure `plan()`.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use super::list_key;
use crate::api::{PENDING_CREATE_ANNOTATION, Webhook};
use crate::bitbucket::{DeliveryStats, Place, RemoteHook, WebhookBackend};
use crate::identity::ConnectionPlace;
use crate::reconcile::connection::View;
use crate::reconcile::plan::{Desired, Observed, Plan, Policies, plan};
use crate::reconcile::{Context, Error};

/// How old a cached list may be and still decide a create.
const RECENT_LIST: Duration = Duration::from_secs(10);

/// How old it may be while the operator's own writes to the place follow each other
/// within [`RECENT_LIST`]: a repository's creates go back to back after its listing, at
/// the budget's pace (#23), and listing again between them would only slow them down.
const WRITING_LIST: Duration = Duration::from_secs(300);

/// What Bitbucket holds for the repository, and what to do about it.
pub struct Observation {
    pub hooks: Vec<RemoteHook>,
    pub plan: Plan,
    /// Data Center: a health poll was due, so the listing's statistics are current.
    pub polled: bool,
    /// The listing cache's key for this connection and repository.
    pub key: ConnectionPlace,
}

impl Observation {
    pub fn hook(&self, id: &str) -> Option<&RemoteHook> {
        self.hooks.iter().find(|h| h.id == id)
    }

    /// The hook's statistics from this listing, when the poll was due (a hook the listing
    /// carries none for has none to report yet).
    pub fn stats(&self, id: &str) -> Option<DeliveryStats> {
        self.polled.then(|| {
            self.hook(id)
                .and_then(|h| h.stats.clone())
                .unwrap_or_default()
        })
    }
}

/// Whom the listing is for.
pub struct Target<'a> {
    pub w: &'a Webhook,
    pub view: &'a View,
    pub backend: &'a Arc<dyn WebhookBackend>,
    pub place: &'a Place,
}

#[tracing::instrument(skip_all, fields(place = %target.place))]
pub async fn observe(
    target: &Target<'_>,
    desired: &Desired,
    ctx: &Context,
) -> Result<Observation, Error> {
    let w = target.w;
    let status = w.status.clone().unwrap_or_default();
    let spec_changed = status.observed_generation != w.metadata.generation;
    let pending = w.annotations().contains_key(PENDING_CREATE_ANNOTATION);
    // When health wants statistics, the listing must be recent, and then it serves the
    // drift check too.
    let poll = ctx.health.statistics_due(
        target.view.spec.flavor,
        &w.uid().unwrap_or_default(),
        &ConnectionPlace::of(w),
        ctx.health_period(&target.view.id, target.view.spec.flavor),
        spec_changed,
    );
    let polled = poll.is_some();
    let max_age = poll.unwrap_or(Duration::MAX);
    let key = list_key(target.view, target.place);
    let decide = |hooks: &[RemoteHook]| {
        let observed = Observed {
            hooks,
            recorded_id: status.webhook_id.as_deref(),
            recorded_secret_version: status.secret_version.as_deref(),
            pending_create: pending,
            spec_changed,
        };
        let policies = Policies {
            adoption: w.spec.settings.adoption,
            drift: w.spec.settings.drift_policy,
            management: w.spec.settings.management_policy,
        };
        plan(desired, &observed, policies)
    };
    let (mut hooks, age) = list(target, &key, max_age, ctx).await?;
    let mut decision = decide(&hooks);
    // A create that may have happened (pending mark) needs a listing taken after it. When
    // this process sent it, its failure dropped the cached listing (`execute`), so any
    // cached one is younger and one listing serves every Webhook of the repository that
    // waits; when another process did (a crash, a handover), no cached one can be trusted.
    let lost_elsewhere = pending && !ctx.lists.create_lost_here(&w.uid().unwrap_or_default());
    let writing = ctx
        .lists
        .since_own_write(&key)
        .is_some_and(|since| since <= RECENT_LIST)
        && age <= WRITING_LIST;
    let recent = age <= RECENT_LIST || writing;
    if decision == Plan::Create && (!recent || lost_elsewhere) {
        // Do not create from an old list: look once more right before. A list of the last
        // seconds (which the operator's own creates keep current) is good enough, and not
        // re-listing then keeps a burst of creates from spending the budget on lists.
        hooks = list(target, &key, Duration::ZERO, ctx).await?.0;
        decision = decide(&hooks);
    }
    Ok(Observation {
        hooks,
        plan: decision,
        polled,
        key,
    })
}

/// The repository's hooks and the listing's age, from the cache when young enough.
async fn list(
    target: &Target<'_>,
    key: &ConnectionPlace,
    max_age: Duration,
    ctx: &Context,
) -> Result<(Vec<RemoteHook>, Duration), Error> {
    listing(target.backend.as_ref(), target.place, key, max_age, ctx).await
}

/// The place's hooks through the shared listing cache (`key`), at most `max_age` old.
pub async fn listing(
    backend: &dyn WebhookBackend,
    place: &Place,
    key: &ConnectionPlace,
    max_age: Duration,
    ctx: &Context,
) -> Result<(Vec<RemoteHook>, Duration), Error> {
    ctx.lists
        .get(key, max_age, || backend.list_hooks(place))
        .await
        .map_err(|e| Error::about_place(place, e))
}
