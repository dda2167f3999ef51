//! The watches behind the controllers: what each keeps in memory, which of its events
//! are worth a reconcile, and which Webhooks a connection's or Secret's change concerns.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use super::connections::ConnectionLike;
use crate::api::{ConnectionKind, FORCE_ORPHAN_ANNOTATION, TEST_REQUESTED_ANNOTATION, Webhook};
use crate::reconcile::claims::Claims;
use crate::reconcile::secrets::SecretCache;

/// What makes an object worth a reconcile: its spec (generation), the annotations that
/// ask for something (a test delivery, a forced release) and deletion. The operator's own
/// writes (status, finalizer, the pending-create mark: each made by a reconcile that goes
/// on) and other people's labels and annotations change none of these, so they do not
/// come back as reconciles.
pub fn changed<K: Resource>(obj: &K) -> Option<u64> {
    let meta = obj.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    for key in [TEST_REQUESTED_ANNOTATION, FORCE_ORPHAN_ANNOTATION] {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .hash(&mut hasher);
    }
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// The objects a reflected watch applies, with a list's (the first, or a re-list after
/// the watch lost its place, as under a burst of writes) held until the list is complete:
/// the reflector's store takes a list in only then, and a reconcile triggered earlier
/// looks up an object the store does not hold yet (one created since the last list) and
/// is dropped, after which the predicate filter, having seen the object, lets no copy of
/// it through until it changes (#23's steady-state benchmark lost 500 Webhooks that way).
pub trait AppliedWhenStored<K>:
    futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Sized
{
    fn applied_when_stored(self) -> impl futures::Stream<Item = Result<K, watcher::Error>> {
        self.scan(Vec::new(), |held: &mut Vec<K>, event| {
            let ready: Vec<Result<K, watcher::Error>> = match event {
                Ok(watcher::Event::Apply(obj)) => vec![Ok(obj)],
                Ok(watcher::Event::Init) => {
                    held.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    held.push(obj);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => std::mem::take(held).into_iter().map(Ok).collect(),
                Ok(watcher::Event::Delete(_)) => Vec::new(),
                Err(e) => vec![Err(e)],
            };
            futures::future::ready(Some(futures::stream::iter(ready)))
        })
        .flatten()
    }
}

impl<K, S> AppliedWhenStored<K> for S where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Sized
{
}

/// How a watch retries while the API server is away: from 250 ms, doubling, at most 5 s.
/// With kube-rs' defaults (30 s here, and 30 s again over the controller's merged
/// triggers) the soak saw changes wait a minute or more after a 3 s API server restart.
/// A watch restarting every 5 s costs little.
pub fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let retries = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(retries.into(), std::time::Duration::from_secs(60))
}

/// The controllers' backoff over their merged triggers: none. Each watch already backs
/// off on its own; kube-rs' default here pauses every trigger of the controller (up to
/// 30 s) whenever any one watch reports an error.
pub struct NoWait;

impl Iterator for NoWait {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoWait {
    fn reset(&mut self) {}
}

/// What in a connection concerns the Webhooks using it: its spec and whether it is
/// verified for that spec. Its periodic re-verification (a new `lastVerifiedTime`) is
/// not: mapped to every Webhook of the connection, it would reconcile them all each time.
fn connection_changed<K: ConnectionLike>(obj: &K) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut hasher);
    if let Some(ready) = obj.ready() {
        (&ready.status, &ready.reason, ready.observed_generation).hash(&mut hasher);
    }
    hasher.finish()
}

/// Connection events that concern Webhooks: a relevant change ([`connection_changed`])
/// or a deletion.
pub fn connection_events<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: ConnectionLike,
{
    let mut last: HashMap<ObjectRef<K>, u64> = HashMap::new();
    // Kept in a store too: the Webhook reconciler reads its connection from there.
    watcher(api, config)
        .backoff(watch_backoff())
        .reflect(writer)
        .filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let hash = connection_changed(&o);
                    (last.insert(ObjectRef::from_obj(&o), hash) != Some(hash)).then_some(Ok(o))
                }
                Ok(watcher::Event::Delete(o)) => {
                    last.remove(&ObjectRef::from_obj(&o));
                    Some(Ok(o))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })
}

pub fn webhooks_using(
    store: &Store<DeserializeGuard<Webhook>>,
    kind: ConnectionKind,
    namespace: Option<String>,
    name: String,
) -> Vec<ObjectRef<DeserializeGuard<Webhook>>> {
    store
        .state()
        .into_iter()
        .filter(|g| {
            g.0.as_ref().is_ok_and(|w| {
                w.spec.connection_ref.kind == kind
                    && w.spec.connection_ref.name == name
                    && (namespace.is_none() || w.namespace() == namespace)
            })
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Drops what the operator never reads from a cached object's metadata.
pub fn slim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What one set of controllers watches: one namespace or all, objects matching a label selector,
/// and whether it serves ClusterBitbucketConnections.
#[derive(Clone, Debug)]
pub struct Scope {
    pub namespace: Option<String>,
    pub selector: Option<String>,
    pub cluster_connections: bool,
}

impl Scope {
    /// The API of a namespaced kind, in the watched namespace or all.
    pub fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// Watch settings for Webhooks and connections (the label selector shards).
    pub fn watch(&self) -> watcher::Config {
        match &self.selector {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        }
    }
}

/// The Webhooks of a scope, read through DeserializeGuard so one malformed object cannot
/// stop the stream; every namespace's watch keeps the process-wide claims index current;
/// `on_synced` once the first list is in (what /readyz reports).
pub fn webhooks(
    client: &kube::Client,
    scope: &Scope,
    writer: reflector::store::Writer<DeserializeGuard<Webhook>>,
    claims: Arc<Claims>,
    on_synced: impl Fn() + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<DeserializeGuard<Webhook>, watcher::Error>> + Send + 'static
{
    let watched = scope.namespace.clone();
    watcher(
        scope.api::<DeserializeGuard<Webhook>>(client),
        scope.watch(),
    )
    .backoff(watch_backoff())
    // Nobody reads managedFields or kubectl's last-applied copy of the spec: not kept
    // in memory (a few KiB per Webhook).
    .modify(|g: &mut DeserializeGuard<Webhook>| {
        if let Ok(w) = &mut g.0 {
            slim(&mut w.metadata);
        }
    })
    .reflect(writer)
    .inspect(move |event| match event {
        Ok(watcher::Event::Init) => claims.forget_namespace(watched.as_deref()),
        Ok(watcher::Event::InitApply(g) | watcher::Event::Apply(g)) => {
            if let Ok(w) = &g.0 {
                claims.upsert(w);
            }
        }
        Ok(watcher::Event::Delete(g)) => {
            if let Ok(w) = &g.0 {
                claims.remove(w);
            }
        }
        Ok(watcher::Event::InitDone) => on_synced(),
        Err(_) => {}
    })
    .applied_when_stored()
    .predicate_filter(changed, PredicateConfig::default())
}

/// The Secrets' metadata of a scope (their versions say when a copy read earlier is
/// stale); a deleted Secret's copy is dropped.
pub fn secret_versions(
    client: &kube::Client,
    scope: &Scope,
    writer: reflector::store::Writer<PartialObjectMeta<Secret>>,
    copies: Arc<SecretCache>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    watcher(
        scope.api::<PartialObjectMeta<Secret>>(client),
        watcher::Config::default(),
    )
    .backoff(watch_backoff())
    .modify(|s: &mut PartialObjectMeta<Secret>| {
        slim(&mut s.metadata);
        // Not read: a Secret applied with kubectl carries its data here.
        s.metadata.annotations = None;
    })
    .reflect(writer)
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(s)) = event {
            copies.forget(&s.namespace().unwrap_or_default(), &s.name_any());
        }
    })
    .touched_objects()
}

/// The Webhooks that read the Secret `namespace`/`name`: to sign with, for their URL, or
/// possibly as their Receiver's token (its name is in the Receiver: every Webhook of the
/// namespace bound to a Receiver without a secretRef of its own).
pub fn webhooks_signed_with(
    store: &Store<DeserializeGuard<Webhook>>,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<DeserializeGuard<Webhook>>> {
    let reads = |w: &Webhook| {
        let settings = &w.spec.settings;
        let source = settings.url_from.as_ref();
        settings.secret_ref.as_ref().is_some_and(|r| r.name == name)
            || source.is_some_and(|s| s.secret_key_ref.as_ref().is_some_and(|k| k.name == name))
            || (settings.secret_ref.is_none() && source.is_some_and(|s| s.receiver_ref.is_some()))
    };
    store
        .state()
        .into_iter()
        .filter(|g| {
            g.0.as_ref()
                .is_ok_and(|w| w.namespace() == namespace && reads(w))
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// The Webhooks bound to a Flux Receiver, as its changes come (the path follows its token,
/// its readiness the notification-controller). A watch error is retried with backoff.
pub fn receiver_changes(
    client: &kube::Client,
    scope: &Scope,
    webhooks: Store<DeserializeGuard<Webhook>>,
) -> impl futures::Stream<Item = ObjectRef<DeserializeGuard<Webhook>>> + Send + 'static {
    use crate::reconcile::{RECEIVER_GROUP, RECEIVER_VERSION};
    use kube::api::DynamicObject;
    use kube::core::{ApiResource, GroupVersionKind};
    let gvk = GroupVersionKind::gvk(RECEIVER_GROUP, RECEIVER_VERSION, "Receiver");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "receivers");
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    watcher(api, watcher::Config::default())
        .backoff(watch_backoff())
        .touched_objects()
        .filter_map(|r| futures::future::ready(r.ok()))
        .flat_map(move |receiver| {
            let (namespace, name) = (receiver.namespace(), receiver.name_any());
            let bound: Vec<_> = webhooks
                .state()
                .into_iter()
                .filter(|g| {
                    g.0.as_ref().is_ok_and(|w| {
                        w.namespace() == namespace
                            && w.spec.settings.url_from.as_ref().is_some_and(|s| {
                                s.receiver_ref.as_ref().is_some_and(|r| r.name == name)
                            })
                    })
                })
                .map(|g| ObjectRef::from_obj(g.as_ref()))
                .collect();
            futures::stream::iter(bound)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn object(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("team".to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// A first list, a watch event, then a re-list that finds "c", made meanwhile.
    fn events() -> impl futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> {
        use watcher::Event::{Apply, Init, InitApply, InitDone};
        let events = [
            Init,
            InitApply(object("a")),
            InitDone,
            Apply(object("b")),
            Init,
            InitApply(object("a")),
            InitApply(object("c")),
            InitDone,
        ];
        futures::stream::iter(events.into_iter().map(Ok))
    }

    /// (name, whether the store held it when it came) for each object a stream hands on.
    async fn handed_on<S>(objects: S, store: Store<ConfigMap>) -> Vec<(String, bool)>
    where
        S: futures::Stream<Item = Result<ConfigMap, watcher::Error>>,
    {
        objects
            .map(|o| {
                let o = o.expect("no watch error");
                (o.name_any(), store.get(&ObjectRef::from_obj(&o)).is_some())
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn every_object_is_in_the_store_when_its_reconcile_is_asked_for() {
        let (store, writer) = reflector::store();
        let ours = handed_on(events().reflect(writer).applied_when_stored(), store).await;
        let expected = [("a", true), ("b", true), ("a", true), ("c", true)];
        assert_eq!(
            ours,
            expected.map(|(n, held)| (n.to_owned(), held)),
            "a list's objects come once the store holds them"
        );
        // What it guards against: kube's own adapter hands "c" on before the store holds
        // it, and the controller drops a reconcile whose object it cannot find.
        let (store, writer) = reflector::store();
        let kube = handed_on(events().reflect(writer).applied_objects(), store).await;
        assert!(kube.contains(&("c".to_owned(), false)), "{kube:?}");
    }
}
