//! Connections: from a (Cluster)BitbucketConnection and its Secrets to a ready client
//! ([`registry`], on [`budgets`] as Bitbucket counts them, with [`retries`] of the
//! Webhooks waiting on it), and the connection reconciler: [`prove`] the credential with
//! as few calls as it takes, then the pure [`status`] step, written and told by
//! [`publish`](super::publish).

mod budgets;
mod prove;
mod registry;
pub mod retries;
mod status;
mod view;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

pub use self::budgets::Allowance;
pub use self::prove::refusal;
pub use self::registry::Registry;
use self::status::Found;
pub use self::status::{BITBUCKET_UNAVAILABLE, IN_USE, RATE_LIMITED};
pub use self::view::{DEFAULT_REQUESTS_PER_HOUR, View};
use super::conditions::{Outcome, Status};
use super::{Context, Error, finalizer, publish};
use crate::api::{BitbucketConnection, ClusterBitbucketConnection, ConnectionStatus, Reason};

/// How often a connection's status is written while requests wait on its budget (the
/// credential's own requests prove it meanwhile: no request of its own).
const QUEUE_SHOWN_EVERY: Duration = Duration::from_secs(30);

/// What proving the connection found now.
async fn check(view: &View, ctx: &Context) -> Found {
    if let Some(until) = ctx.connections.paused_until(view) {
        return Found::Paused { until };
    }
    let result = match ctx.connections.backend(&ctx.secret_reader(), view).await {
        Ok(backend) => match ctx
            .connections
            .proven_by_use(view, ctx.config.resync_period)
        {
            Some(proof) => Ok(proof),
            None => prove::prove(view, &ctx.claims, backend.as_ref())
                .await
                .map_err(|e| prove::app_password_hint(view, e)),
        },
        Err(e) => Err(e),
    };
    Found::Checked {
        result,
        failing_since: ctx.connections.failing_since(view),
    }
}

/// Reconciles either kind: verify, write status, tell about changes.
async fn reconcile_view<K>(
    obj: &K,
    api: Api<K>,
    view: View,
    ctx: Arc<Context>,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let key = super::object_key(obj);
    if obj.meta().deletion_timestamp.is_some() {
        return release(obj, &api, &view, &ctx).await;
    }
    // In use by Webhooks, a connection must outlive their cleanup (deleted together, as a
    // namespace or an Argo CD app is, in no fixed order).
    finalizer::claim(&api, obj, None).await?;
    let started = std::time::Instant::now();
    let found = check(&view, &ctx).await;
    // What the Webhooks' own listings show, at no request of its own.
    let managed = ctx.claims.managed_by(&view.id);
    let mut counts = crate::api::HookCounts::default();
    ctx.lists.for_each_listing(&view.id, |place, hooks| {
        status::count_place(&mut counts, hooks, managed.get(place));
    });
    let hooks = status::counted(counts);
    if let Some(counts) = &hooks {
        let label = view.id.metric_label();
        ctx.metrics
            .connection_hooks(&label, counts.unmanaged, counts.duplicates);
    }
    let step = status::step(
        view.status.as_ref(),
        view.generation,
        found,
        ctx.connections
            .allowance(&view)
            .map(|a| budgets::Allowance {
                resync_every: Some(ctx.resync_period(&view.id)),
                ..a
            }),
        hooks,
        jiff::Timestamp::now(),
    );
    ctx.metrics.reconciled(
        &K::kind(&()),
        started.elapsed(),
        step.error.as_ref().map(Error::reason),
    );
    publish::status(&api, view.name(), &step.status).await?;
    publish::events(&ctx.recorder, obj, step.notes).await;
    // While requests wait on the budget, the status follows the queue.
    let queued = step
        .status
        .budget
        .as_ref()
        .and_then(|b| b.queued)
        .is_some_and(|n| n > 0);
    match step.error {
        None if queued => {
            ctx.succeeded(&key);
            Ok(Action::requeue(QUEUE_SHOWN_EVERY))
        }
        None => {
            ctx.succeeded(&key);
            Ok(Action::requeue(ctx.config.resync_period))
        }
        Some(e) if e.transient() => Ok(Action::requeue(super::requeue_after(&ctx, &key, &e))),
        // Waits for a change of the connection or its Secret (both are watched), with a
        // slow check in case the cause was outside Kubernetes (a revoked token restored).
        Some(_) => Ok(Action::requeue(ctx.config.resync_period)),
    }
}

/// A connection being deleted stays while Webhooks use it (their cleanup needs its
/// credential), saying so in `InUse`; then its finalizer goes.
async fn release<K>(obj: &K, api: &Api<K>, view: &View, ctx: &Context) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !finalizer::held(obj) {
        return Ok(Action::await_change());
    }
    let users = ctx.claims.users(&view.id);
    if users > 0 {
        let in_use = Outcome::new(
            Status::True,
            Reason::InUse,
            format!(
                "being deleted: kept until the {users} Webhook(s) using it are gone, so their cleanup can reach Bitbucket"
            ),
        );
        let previous: ConnectionStatus = view.status.clone().unwrap_or_default();
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let status = status::with_condition(previous, IN_USE, &in_use, view.generation, &now);
        publish::status(api, view.name(), &status).await?;
        // Webhooks finish their cleanup within seconds; look again soon.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    ctx.connections.forget(view);
    finalizer::release(api, obj).await?;
    Ok(Action::await_change())
}

pub async fn reconcile_namespaced(
    obj: Arc<BitbucketConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    reconcile_view(obj.as_ref(), api, View::namespaced(&obj), ctx).await
}

pub async fn reconcile_cluster(
    obj: Arc<ClusterBitbucketConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api = Api::all(ctx.client.clone());
    let view = View::cluster(&obj, &ctx.config.cluster_secret_namespace);
    reconcile_view(obj.as_ref(), api, view, ctx).await
}
