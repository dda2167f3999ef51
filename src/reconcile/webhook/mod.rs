//! The Webhook reconciler: a short driver over its steps.
//!
//! [`dereference`] (connection, Secrets) -> [`validate`] (pure) -> [`observe`] (the
//! repository's cached listing, planned by the pure `plan()`) -> [`execute`] (the only
//! writes to Bitbucket) -> health -> [`status`] (pure: the new status and its Events).
//! Deletion: [`cleanup`] (a pure deletion plan, then `execute`).

mod cleanup;
pub(crate) mod dereference;
#[cfg(test)]
mod driver_tests;
mod execute;
#[cfg(test)]
pub(crate) mod fixture;
mod inherited;
mod observe;
mod priority;
mod status;
pub mod url_from;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use self::observe::Target;
pub use self::priority::trust;
pub use self::validate::place;
use super::connection::View;
use super::plan::{Desired, Field};
use super::{Context, Error, conditions, finalizer, object_key, publish};
use crate::api::{
    DeliveryHealth, DeliveryStatus, Flavor, PENDING_CREATE_ANNOTATION, TEST_REQUESTED_ANNOTATION,
    Webhook, WebhookStatus,
};
use crate::bitbucket::queue::{Priority, Ticket};
use crate::bitbucket::{DeliveryStats, Place, WebhookBackend};
use crate::health::{Assessment, Inputs};
use crate::identity::{ConnectionId, ConnectionPlace, PlaceKey};
use crate::metrics::WebhookState;
use crate::slots;

/// What the reconciler would refuse in a Webhook's spec for a flavor, checked offline
/// (the `check` command).
pub fn check_spec(w: &Webhook, flavor: Flavor) -> Result<(), super::Invalid> {
    validate::spec(w, flavor).map(drop)
}

/// The same for an event list alone (a WebhookSet's template).
pub fn check_events(flavor: Flavor, events: Option<&Vec<String>>) -> Result<(), super::Invalid> {
    validate::events(flavor, events).map(drop)
}

/// What a successful sync did.
#[derive(Debug, PartialEq)]
pub enum Done {
    InSync,
    Created,
    Adopted,
    Updated(Vec<Field>),
    Drifted(Vec<Field>),
    Missing { deleted: bool },
}

/// What a successful sync reports in status.
#[derive(Debug)]
pub struct Report {
    pub id: Option<String>,
    pub done: Done,
    pub place: Place,
    /// Bitbucket's page of the place's webhooks.
    pub page: String,
    /// The signing Secret's version now on Bitbucket.
    pub secret_version: Option<String>,
    /// A project or workspace hook with the same URL that the repository inherits.
    pub inherited_duplicate: Option<String>,
}

/// A successful sync, with what the health assessment needs.
struct Synced {
    report: Report,
    flavor: Flavor,
    backend: Arc<dyn WebhookBackend>,
    /// Where deliveries go (the spec's url, or what urlFrom named).
    url: String,
    secret: Option<secrecy::SecretString>,
    /// The Webhook's probe, else the connection's.
    probe: Option<crate::api::ProbeSpec>,
    allow_private_targets: bool,
    /// Data Center: the hook's statistics from this reconcile's listing, when a health
    /// poll was due (None: not polled now).
    stats: Option<DeliveryStats>,
}

/// Entry point for the controller.
#[tracing::instrument(skip_all, fields(webhook = %guard_key(&guard)))]
pub async fn reconcile(
    guard: Arc<DeserializeGuard<Webhook>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let webhook = match &guard.0 {
        Ok(w) => Arc::new(w.clone()),
        Err(invalid) => {
            // One malformed object must not stop the others: say so and wait for a fix.
            tracing::warn!(error = %invalid.error, "cannot read a Webhook");
            return Ok(Action::await_change());
        }
    };
    let namespace = webhook.namespace().unwrap_or_default();
    let api: Api<Webhook> = Api::namespaced(ctx.client.clone(), &namespace);
    match run(&api, &webhook, &ctx).await {
        // The cached copy is older than the object (a finalizer write refused): read it
        // once more instead of retrying from the same stale copy until the watch catches up.
        Err(Error::Stale { .. }) => {
            tracing::debug!("the cached Webhook is stale; reading it again");
            match api.get_opt(&webhook.name_any()).await? {
                Some(fresh) => run(&api, &fresh, &ctx).await,
                None => Ok(Action::await_change()),
            }
        }
        other => other,
    }
}

/// Apply, or clean up and release the finalizer.
async fn run(api: &Api<Webhook>, w: &Webhook, ctx: &Context) -> Result<Action, Error> {
    if w.meta().deletion_timestamp.is_none() {
        return apply(w, api, ctx).await;
    }
    if !finalizer::held(w) {
        return Ok(Action::await_change());
    }
    // The finalizer stays until the cleanup succeeded.
    let action = cleanup::cleanup(w, ctx).await?;
    finalizer::release(api, w).await?;
    Ok(action)
}

fn guard_key(guard: &DeserializeGuard<Webhook>) -> String {
    match &guard.0 {
        Ok(w) => object_key(w),
        Err(invalid) => invalid.metadata.name.clone().unwrap_or_default(),
    }
}

/// When to look again after `error`. Bitbucket itself failed (5xx, no answer, its 429):
/// the Webhook is retried as soon as its connection's Bitbucket answers again, not only
/// when its backoff ends; and within a second or so when it already answers again.
fn retry_after_failure(ctx: &Context, w: &Webhook, key: &str, error: &Error) -> Duration {
    use crate::bitbucket::Error as Bitbucket;
    let backoff = super::requeue_after(ctx, key, error);
    if !matches!(
        error,
        Error::Bitbucket(
            Bitbucket::Unavailable { .. } | Bitbucket::RateLimited { local: false, .. }
        )
    ) {
        return backoff;
    }
    if ctx.connections.wait(&ConnectionId::of(w), name_of(w)) {
        backoff
    } else {
        backoff.min(Duration::from_millis(rand::random_range(500..=1500)))
    }
}

/// The Webhook's namespace and name.
fn name_of(w: &Webhook) -> (String, String) {
    (w.namespace().unwrap_or_default(), w.name_any())
}

/// Bitbucket refused the credential or what it holds: a new credential may fix it.
fn refused_credential(e: &Error) -> bool {
    matches!(e, Error::Bitbucket(b) if super::connection::refusal(b))
}

/// Requeue after an error that escaped the status (cleanup, Kubernetes API failures).
pub fn error_policy(
    guard: Arc<DeserializeGuard<Webhook>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    match &guard.0 {
        Ok(w) => {
            publish::log_failure(w, error);
            Action::requeue(retry_after_failure(&ctx, w, &object_key(w), error))
        }
        Err(_) => publish::error_policy(guard.as_ref(), error, &ctx),
    }
}

/// Sync, assess, write status, tell, and say when to look again.
async fn apply(w: &Webhook, api: &Api<Webhook>, ctx: &Context) -> Result<Action, Error> {
    let current = priority::current(w);
    let fresh = priority::fresh(
        w,
        ctx.config.status_refresh + ctx.resync_period(&ConnectionId::of(w)),
        jiff::Timestamp::now(),
    );
    let until_slot = until_slot(w, ctx);
    // A status naming a hook this process deleted (the Webhook moved here while the old
    // one was deleted) is looked at again.
    let current = current && !ctx.handover.was_deleted(w);
    if ctx.trusted(&w.uid().unwrap_or_default(), current, fresh, until_slot) {
        // A restart or handover found the status current and recent: it stands until the
        // repository's slot (no Bitbucket call, no status write).
        if let Some(status) = &w.status {
            gauges(ctx, w, status);
        }
        return Ok(Action::requeue(until_slot));
    }
    let _permit = if current {
        match ctx.periodic.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            // Periodic work waits its turn; a changed Webhook never does.
            Err(_) => return Ok(Action::requeue(priority::step_back(&object_key(w)))),
        }
    } else {
        None
    };
    let started = std::time::Instant::now();
    let Looked {
        result,
        mut notes,
        health,
    } = match look(w, api, ctx, current).await? {
        Look::Done(looked) => *looked,
        // Not retried within seconds (thousands of deferred checks would spin): the next
        // slot of its repository, which the stretched resync period spreads to fit
        // periodic work's share of the budget.
        Look::Deferred(wait) => {
            return Ok(Action::requeue(
                wait.max(until_slot) + priority::step_back(&object_key(w)),
            ));
        }
    };
    let report = result.as_ref().map(|s| &s.report);
    let now = jiff::Timestamp::now();
    let status = status::new_status(w, report, health.as_ref(), Time(now));
    if status::worth_writing(w.status.as_ref(), &status, ctx.config.status_refresh, now) {
        publish::status(api, &w.name_any(), &status).await?;
    }
    // The mark goes once the id is in status: set by this reconcile's create (this copy of
    // the object predates it) or by an earlier one.
    let marked = w.annotations().contains_key(PENDING_CREATE_ANNOTATION)
        || matches!(
            report,
            Ok(Report {
                done: Done::Created,
                ..
            })
        );
    if marked && status.webhook_id.is_some() {
        finalizer::clear_mark(api, w).await?;
    }
    notes.extend(status::events(w, report, &status, health.as_ref()));
    publish::events(&ctx.recorder, w, notes).await;
    record(ctx, w, report, &status, started.elapsed());
    Ok(next(w, report, health.as_ref(), ctx, started))
}

/// What one look at Bitbucket came to.
enum Look {
    /// The sync's outcome, Events to add, and the delivery health when it synced.
    Done(Box<Looked>),
    /// Periodic work gave way to changes waiting on the credential's budget, found its
    /// share of the budget spent, or met Bitbucket's 429 pause: nothing was looked at, so
    /// the status stands until it comes back (at the earliest after this long).
    Deferred(Duration),
}

struct Looked {
    result: Result<Synced, Error>,
    notes: Vec<crate::reconcile::publish::Note>,
    health: Option<Assessment>,
}

/// Sync and assess, with the Webhook's requests in their turn on the credential's
/// budget: a changed Webhook's before periodic ones, and with the other requests of its
/// repository.
async fn look(
    w: &Webhook,
    api: &Api<Webhook>,
    ctx: &Context,
    current: bool,
) -> Result<Look, Error> {
    let (sync_priority, health_priority) = if current {
        (Priority::Drift, Priority::Health)
    } else {
        (Priority::Change, Priority::Change)
    };
    let ticket = Ticket::new(sync_priority, &ConnectionPlace::of(w));
    let (result, notes) = match dereference::generated_secret(w, ctx).await {
        Ok(generated) => (
            ticket.scope(sync(w, api, ctx)).await,
            Vec::from_iter(generated),
        ),
        Err(e) => (Err(e), Vec::new()),
    };
    let result = match result {
        // Not the status's to say: the caller reads the Webhook again.
        Err(e @ Error::Stale { .. }) => return Err(e),
        Err(Error::Bitbucket(crate::bitbucket::Error::RateLimited {
            local: true,
            retry_after,
        })) if current => {
            return Ok(Look::Deferred(
                retry_after.unwrap_or(Duration::from_secs(1)),
            ));
        }
        other => other,
    };
    let health = match &result {
        Ok(synced) => {
            ticket
                .at(health_priority)
                .scope(assess(w, synced, ctx))
                .await
        }
        Err(_) => None,
    };
    Ok(Look::Done(Box::new(Looked {
        result,
        notes,
        health,
    })))
}

/// The steps up to Bitbucket and back.
async fn sync(w: &Webhook, api: &Api<Webhook>, ctx: &Context) -> Result<Synced, Error> {
    let view = dereference::connection(w, ctx).await?;
    view.readiness()?;
    ctx.connections.ask_to_prove(&view);
    let flavor = view.spec.flavor;
    let valid = validate::spec(w, flavor)?;
    validate::conflict(w, &ctx.claims)?;
    // Nothing reaches Bitbucket before the URL (a Receiver's) is known.
    let delivery = url_from::resolve(w, &view, ctx).await?;
    // Not while another Webhook of this hook (one moved away) is deleting it.
    let _turn = ctx.handover.turn(w).await;
    let backend = ctx.connections.backend(&ctx.secret_reader(), &view).await?;
    let secret = match delivery.receiver_secret {
        Some(token) => Some(token),
        None => dereference::signing_secret(w, ctx).await?,
    };
    let desired = desired(w, delivery.url, valid.events, secret);
    let target = Target {
        w,
        view: &view,
        backend: &backend,
        place: &valid.place,
    };
    let observation = observe::observe(&target, &desired, ctx).await?;
    let (id, done) = execute::execute(&target, &desired, &observation, api, ctx).await?;
    let inherited_duplicate = match id {
        Some(_) => inherited::duplicate(&target, &desired.url, ctx).await,
        None => None,
    };
    // The Secret's version is on Bitbucket once the hook matches the spec.
    let secret_version = match done {
        Done::Drifted(_) | Done::Missing { .. } => {
            w.status.as_ref().and_then(|s| s.secret_version.clone())
        }
        _ => desired.secret.as_ref().map(|s| s.version.clone()),
    };
    // A hook created a moment ago has delivered nothing: that is its first statistics
    // reading (Data Center), rather than a listing again right away to learn the same.
    let stats = match done {
        Done::Created => Some(DeliveryStats::default()),
        _ => id.as_deref().and_then(|id| observation.stats(id)),
    };
    Ok(Synced {
        stats,
        report: Report {
            id,
            done,
            page: backend.webhooks_page(&valid.place),
            place: valid.place,
            secret_version,
            inherited_duplicate,
        },
        flavor,
        url: desired.url,
        secret: desired.secret.map(|s| s.value),
        probe: w
            .spec
            .settings
            .probe
            .clone()
            .or_else(|| view.spec.probe.clone()),
        allow_private_targets: ctx.connections.allow_private_targets(&view),
        backend,
    })
}

fn desired(
    w: &Webhook,
    url: String,
    events: Vec<String>,
    secret: Option<super::plan::DesiredSecret>,
) -> Desired {
    let namespace = w.namespace().unwrap_or_default();
    Desired {
        title: w
            .spec
            .settings
            .title
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{}", w.name_any())),
        url,
        active: w.spec.settings.active,
        events,
        secret,
        skip_cert_verification: w.spec.settings.skip_cert_verification,
    }
}

/// When to look again: the repository's next resync slot, sooner for health or a retry.
fn next(
    w: &Webhook,
    report: Result<&Report, &Error>,
    health: Option<&Assessment>,
    ctx: &Context,
    started: std::time::Instant,
) -> Action {
    let key = object_key(w);
    let slot = match report {
        Ok(_) => until_slot(w, ctx),
        Err(_) => slots::until_slot(ctx.resync_period(&ConnectionId::of(w)), &key),
    };
    match report {
        Ok(_) => {
            ctx.succeeded(&key);
            ctx.connections.stop_waiting(&name_of(w));
            let next = health.and_then(|h| h.next).map_or(slot, |n| n.min(slot));
            Action::requeue(next.max(Duration::from_millis(500)))
        }
        Err(e) if e.transient() => Action::requeue(retry_after_failure(ctx, w, &key, e)),
        // Needs a change somewhere (watched; a credential refused is retried when the
        // connection's client is rebuilt), or a person in Bitbucket: look again at the
        // next resync.
        Err(e) => {
            // A client rebuilt while this reconcile used the old one has released the
            // stalled before this one joined them: look again soon instead.
            if refused_credential(e)
                && !ctx
                    .connections
                    .stall(&ConnectionId::of(w), name_of(w), started)
            {
                return Action::requeue(Duration::from_millis(rand::random_range(500..=1500)));
            }
            Action::requeue(slot.max(Duration::from_secs(1)))
        }
    }
}

/// Until the next resync slot of the Webhook's repository (project, workspace): the
/// Webhooks of one place through one connection share resync and health slots.
fn until_slot(w: &Webhook, ctx: &Context) -> Duration {
    slots::until_slot(
        ctx.resync_period(&ConnectionId::of(w)),
        &ConnectionPlace::of(w),
    )
}

/// The listing cache's key: one connection's view of one place.
fn list_key(view: &View, place: &Place) -> ConnectionPlace {
    ConnectionPlace::new(view.id.clone(), PlaceKey::from(place))
}

/// Metrics of one reconcile: its outcome and the Webhook's health and readiness.
fn record(
    ctx: &Context,
    w: &Webhook,
    report: Result<&Report, &Error>,
    status: &WebhookStatus,
    took: Duration,
) {
    ctx.metrics
        .reconciled("Webhook", took, report.err().map(Error::reason));
    gauges(ctx, w, status);
    let failed = |d: Option<&DeliveryStatus>| {
        d.map_or(0, |d| d.failures.unwrap_or(0) + d.errors.unwrap_or(0))
    };
    let before = failed(w.status.as_ref().and_then(|s| s.delivery.as_ref()));
    let after = failed(status.delivery.as_ref());
    if after > before {
        ctx.metrics
            .delivery_failures(u64::try_from(after - before).unwrap_or(0));
    }
}

/// The Webhook's health and readiness in the gauges.
fn gauges(ctx: &Context, w: &Webhook, status: &WebhookStatus) {
    let health = status
        .delivery
        .as_ref()
        .map_or(DeliveryHealth::Unknown, |d| d.health);
    let ready = conditions::find(&status.conditions, conditions::READY)
        .map_or("Unknown", |c| c.status.as_str());
    let namespace = w.namespace().unwrap_or_default();
    let connection = ConnectionId::of(w).metric_label();
    ctx.metrics.webhook(
        &w.uid().unwrap_or_default(),
        Some(WebhookState {
            namespace,
            name: w.name_any(),
            connection,
            health: format!("{health:?}"),
            ready: ready.to_owned(),
        }),
    );
}

/// Delivery health for a hook that exists.
#[tracing::instrument(skip_all)]
async fn assess(w: &Webhook, synced: &Synced, ctx: &Context) -> Option<Assessment> {
    let id = synced.report.id.as_deref()?;
    let previous = w.status.as_ref();
    let uid = w.uid().unwrap_or_default();
    let place = &synced.report.place;
    Some(
        crate::health::assess(Inputs {
            schedule: &ctx.health,
            key: &uid,
            flavor: synced.flavor,
            backend: synced.backend.as_ref(),
            place,
            hook_id: id,
            url: &synced.url,
            secret: synced.secret.as_ref(),
            skip_cert_verification: w.spec.settings.skip_cert_verification,
            probe: synced.probe.as_ref(),
            allow_private_targets: synced.allow_private_targets,
            stats: synced.stats.as_ref(),
            group: &ConnectionPlace::of(w),
            now: previous.and_then(|s| s.observed_generation) != w.metadata.generation,
            test_requested: w
                .annotations()
                .get(TEST_REQUESTED_ANNOTATION)
                .map(String::as_str),
            previous: previous.and_then(|s| s.delivery.as_ref()),
            poll_every: ctx.health_period(&ConnectionId::of(w), synced.flavor),
        })
        .await,
    )
}
