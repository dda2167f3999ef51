//! The connection controllers: a connection's spec, the Secrets it reads, and the
//! start of a pause or outage of the budget it uses (so its status shows it).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use super::watches::{AppliedWhenStored, NoWait, Scope, changed, watch_backoff};
use crate::api::{BitbucketConnection, ClusterBitbucketConnection, ConnectionKind};
use crate::reconcile::conditions;
use crate::reconcile::{Registry, retries};

/// A connection controller: the connection itself (spec changes), the Secrets it reads,
/// and the start of a pause after a Bitbucket 429 (so its status shows `RateLimited`).
pub fn controller<K>(
    client: &kube::Client,
    api: Api<K>,
    scope: &Scope,
    secret_namespace: Option<String>,
    registry: Arc<Registry>,
) -> Controller<K>
where
    K: ConnectionLike,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, scope.watch())
        .backoff(watch_backoff())
        .reflect(writer)
        .applied_when_stored()
        .predicate_filter(changed, PredicateConfig::default());
    let by_secret = store.clone();
    let secrets = watcher(
        scope.api::<PartialObjectMeta<Secret>>(client),
        watcher::Config::default(),
    )
    .backoff(watch_backoff())
    .touched_objects();
    let pauses = retries::announced(registry.budgets.pauses()).flat_map(move |budget| {
        let refs: Vec<ObjectRef<K>> = registry
            .budgets
            .connections_on(&budget)
            .into_iter()
            .filter(|c| c.kind == K::KIND)
            .map(|c| match &c.namespace {
                Some(namespace) => ObjectRef::new(&c.name).within(namespace),
                None => ObjectRef::new(&c.name),
            })
            .collect();
        futures::stream::iter(refs)
    });
    Controller::for_stream(stream, store)
        .trigger_backoff(NoWait)
        .reconcile_on(pauses)
        .watches_stream(secrets, move |secret| {
            let (namespace, name) = (secret.namespace(), secret.name_any());
            by_secret
                .state()
                .into_iter()
                .filter(|c| {
                    let home = secret_namespace.clone().or_else(|| c.namespace());
                    home == namespace && c.secret_names().contains(&name)
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
}

/// Either connection kind, with what watching it takes.
pub trait ConnectionLike:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Which kind it is.
    const KIND: ConnectionKind;
    /// The Secrets the connection reads.
    fn secret_names(&self) -> Vec<String>;
    /// The connection's Ready condition, if it has one.
    fn ready(&self) -> Option<&Condition>;
}

fn ready_of(status: Option<&crate::api::ConnectionStatus>) -> Option<&Condition> {
    status.and_then(|s| conditions::find(&s.conditions, conditions::READY))
}

fn secret_names(spec: &crate::api::ConnectionSpec) -> Vec<String> {
    let mut names = vec![spec.auth.secret_ref.name.clone()];
    if let Some(ca) = spec
        .tls
        .as_ref()
        .and_then(|t| t.ca_bundle_secret_ref.as_ref())
    {
        names.push(ca.name.clone());
    }
    names
}

impl ConnectionLike for BitbucketConnection {
    const KIND: ConnectionKind = ConnectionKind::BitbucketConnection;
    fn secret_names(&self) -> Vec<String> {
        secret_names(&self.spec.connection)
    }
    fn ready(&self) -> Option<&Condition> {
        ready_of(self.status.as_ref())
    }
}

impl ConnectionLike for ClusterBitbucketConnection {
    const KIND: ConnectionKind = ConnectionKind::ClusterBitbucketConnection;
    fn secret_names(&self) -> Vec<String> {
        secret_names(&self.spec.connection)
    }
    fn ready(&self) -> Option<&Condition> {
        ready_of(self.status.as_ref())
    }
}
