//! Controller wiring: which watches trigger which reconciles.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use crate::api::{
    BitbucketConnection, ClusterBitbucketConnection, ConnectionKind, FORCE_ORPHAN_ANNOTATION,
    TEST_REQUESTED_ANNOTATION, WEBHOOKSET_LABEL, Webhook, WebhookSet,
};
use crate::metrics::Metrics;
use crate::reconcile::connection::{self, retries};
use crate::reconcile::{self, Config, Context, Shared, webhook, webhookset};
use std::sync::atomic::AtomicBool;

/// What makes an object worth a reconcile: its spec (generation), the annotations that
/// ask for something (a test delivery, a forced release) and deletion. The operator's own
/// writes (status, finalizer, the pending-create mark: each made by a reconcile that goes
/// on) and other people's labels and annotations change none of these, so they do not
/// come back as reconciles.
fn changed<K: Resource>(obj: &K) -> Option<u64> {
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

/// How a watch retries while the API server is away: from 250 ms, doubling, at most 5 s.
/// With kube-rs' defaults (30 s here, and 30 s again over the controller's merged
/// triggers) the soak saw changes wait a minute or more after a 3 s API server restart.
/// A watch restarting every 5 s costs little.
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
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
struct NoWait;

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
fn connection_events<K>(
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

fn webhooks_using(
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

/// Runs the controllers until `shutdown` resolves: for each watched namespace (or all) a
/// Webhook and a BitbucketConnection controller, and one ClusterBitbucketConnection
/// controller. Namespaces share the connection clients, their budgets and the caches.
/// `ready` turns true once every namespace's Webhook watch has synced.
pub async fn run(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let reporter = Reporter {
        controller: crate::api::FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let shared = Shared::new(&config, metrics);
    let namespaces: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let synced: Arc<Vec<AtomicBool>> =
        Arc::new(namespaces.iter().map(|_| AtomicBool::new(false)).collect());
    let mut shards = Vec::new();
    let mut first: Option<Arc<Context>> = None;
    for (index, namespace) in namespaces.into_iter().enumerate() {
        let scope = Scope {
            namespace,
            selector: config.selector.clone(),
            cluster_connections: config.cluster_connections,
        };
        let ready = ready.clone();
        let synced = synced.clone();
        let on_synced = move || {
            if let Some(flag) = synced.get(index) {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if synced
                .iter()
                .all(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            {
                ready.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let (ctx, work) = shard(
            &client,
            &config,
            &shared,
            recorder.clone(),
            scope,
            on_synced,
            stopped.clone(),
        );
        first.get_or_insert(ctx);
        shards.push(work);
    }
    let cluster = async {
        let Some(ctx) = first.filter(|_| config.cluster_connections) else {
            return;
        };
        let namespace = ctx.config.cluster_secret_namespace.clone();
        let secrets = Scope {
            namespace: Some(namespace.clone()),
            selector: config.selector.clone(),
            cluster_connections: true,
        };
        connection_controller::<ClusterBitbucketConnection>(
            &client,
            Api::all(client.clone()),
            &secrets,
            Some(namespace),
            ctx.connections.clone(),
        )
        .graceful_shutdown_on(stopped())
        .run(connection::reconcile_cluster, error_policy, ctx.clone())
        .for_each(|_| async {})
        .await;
    };
    futures::join!(futures::future::join_all(shards), cluster);
}

/// The controllers of one namespace (or of all): Webhooks and BitbucketConnections.
fn shard<S, F, R>(
    client: &kube::Client,
    config: &Config,
    shared: &Shared,
    recorder: Recorder,
    scope: Scope,
    on_synced: R,
    stopped: S,
) -> (Arc<Context>, impl Future<Output = ()> + use<S, F, R>)
where
    S: Fn() -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + Sync + 'static,
    R: Fn() + Send + Sync + 'static,
{
    // Webhooks, read through DeserializeGuard so one malformed object cannot stop the stream.
    let webhooks_api: Api<DeserializeGuard<Webhook>> = scope.api(client);
    let (webhooks, writer) = reflector::store();
    let claims = shared.claims.clone();
    let watched = scope.namespace.clone();
    let webhook_stream = watcher(webhooks_api, scope.watch())
        .backoff(watch_backoff())
        // Nobody reads managedFields or kubectl's last-applied copy of the spec: not kept
        // in memory (a few KiB per Webhook).
        .modify(|g: &mut DeserializeGuard<Webhook>| {
            if let Ok(w) = &mut g.0 {
                slim(&mut w.metadata);
            }
        })
        .reflect(writer)
        // Every namespace's watch keeps the process-wide claims index current.
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
            _ => {}
        })
        // Ready once the Webhook watch has listed everything (what /readyz reports).
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                on_synced();
            }
        })
        .applied_objects()
        .predicate_filter(changed, PredicateConfig::default());
    let (connections, connections_writer) = reflector::store();
    let (cluster_connections, cluster_writer) = reflector::store();
    let (secret_versions, secrets_writer) = reflector::store();
    let mut ctx = Context::new(
        client.clone(),
        recorder,
        config.clone(),
        webhooks.clone(),
        shared,
    );
    ctx.connection_cache = Some(connections);
    ctx.secret_versions = Some(secret_versions);
    if scope.cluster_connections {
        ctx.cluster_connection_cache = Some(cluster_connections);
    }
    let ctx = Arc::new(ctx);

    let by_connection = webhooks.clone();
    let by_cluster_connection = webhooks.clone();
    let by_secret = webhooks.clone();
    let copies = ctx.secrets.clone();
    let secrets = watcher(
        scope.api::<PartialObjectMeta<Secret>>(client),
        watcher::Config::default(),
    )
    .backoff(watch_backoff())
    .modify(|s: &mut PartialObjectMeta<Secret>| {
        slim(&mut s.metadata);
        // Not read: a Secret applied with kubectl carries its data here.
        s.metadata.annotations = None;
    })
    .reflect(secrets_writer)
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(s)) = event {
            copies.forget(&s.namespace().unwrap_or_default(), &s.name_any());
        }
    })
    .touched_objects();
    let mut webhook_controller = Controller::for_stream(webhook_stream, webhooks)
        .trigger_backoff(NoWait)
        .watches_stream(
            connection_events(
                scope.api::<BitbucketConnection>(client),
                scope.watch(),
                connections_writer,
            ),
            move |c| {
                webhooks_using(
                    &by_connection,
                    ConnectionKind::BitbucketConnection,
                    c.namespace(),
                    c.name_any(),
                )
            },
        )
        .watches_stream(secrets, move |secret| {
            let (namespace, name) = (secret.namespace(), secret.name_any());
            by_secret
                .state()
                .into_iter()
                .filter(|g| {
                    g.0.as_ref().is_ok_and(|w| {
                        w.namespace() == namespace
                            && w.spec
                                .settings
                                .secret_ref
                                .as_ref()
                                .is_some_and(|r| r.name == name)
                    })
                })
                .map(|g| ObjectRef::from_obj(g.as_ref()))
                .collect::<Vec<_>>()
        });
    if scope.cluster_connections {
        webhook_controller = webhook_controller.watches_stream(
            connection_events(
                Api::<ClusterBitbucketConnection>::all(client.clone()),
                scope.watch(),
                cluster_writer,
            ),
            move |c| {
                webhooks_using(
                    &by_cluster_connection,
                    ConnectionKind::ClusterBitbucketConnection,
                    None,
                    c.name_any(),
                )
            },
        );
    }
    // Webhooks that found Bitbucket failing are retried when it answers again (through
    // the budget, which paces them), instead of each sleeping out its own backoff.
    let answering = retries::due(ctx.connections.clone(), scope.namespace.clone())
        .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace));
    let webhook_controller = webhook_controller
        .reconcile_on(answering)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stopped())
        .run(webhook::reconcile, webhook::error_policy, ctx.clone())
        .for_each(|_| async {});
    let namespaced = connection_controller::<BitbucketConnection>(
        client,
        scope.api(client),
        &scope,
        None,
        ctx.connections.clone(),
    )
    .graceful_shutdown_on(stopped())
    .run(connection::reconcile_namespaced, error_policy, ctx.clone())
    .for_each(|_| async {});
    let (set_children, set_children_writer) = reflector::store();
    let sets = set_controller(client, &scope, set_children_writer)
        .graceful_shutdown_on(stopped())
        .run(
            webhookset::reconcile,
            webhookset::error_policy,
            Arc::new(webhookset::SetContext::new(ctx.clone(), set_children)),
        )
        .for_each(|_| async {});
    let work = async move {
        futures::join!(webhook_controller, namespaced, sets);
    };
    (ctx, work)
}

/// The WebhookSet controller: sets, and the Webhooks they made (watched apart from the
/// Webhook controller's watch, and only those with the set label).
fn set_controller(
    client: &kube::Client,
    scope: &Scope,
    children: reflector::store::Writer<Webhook>,
) -> Controller<WebhookSet> {
    let mut watch = scope.watch();
    watch.label_selector = Some(match watch.label_selector.take() {
        Some(shard) => format!("{shard},{WEBHOOKSET_LABEL}"),
        None => WEBHOOKSET_LABEL.to_owned(),
    });
    let children = watcher(scope.api::<Webhook>(client), watch)
        .backoff(watch_backoff())
        .modify(|w: &mut Webhook| slim(&mut w.metadata))
        .reflect(children)
        .touched_objects();
    Controller::new(scope.api::<WebhookSet>(client), scope.watch())
        .trigger_backoff(NoWait)
        .owns_stream(children)
        // Many Webhooks change at once (a set's creation): one reconcile counts them all.
        // Short: a debounce keeps delaying while changes go on, and the Webhooks of a
        // paced set change every second or so.
        .with_config(
            controller::Config::default()
                .concurrency(4)
                .debounce(std::time::Duration::from_millis(250)),
        )
}

/// Drops what the operator never reads from a cached object's metadata.
fn slim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A connection controller: the connection itself (spec changes), the Secrets it reads,
/// and the start of a pause after a Bitbucket 429 (so its status shows `RateLimited`).
fn connection_controller<K>(
    client: &kube::Client,
    api: Api<K>,
    scope: &Scope,
    secret_namespace: Option<String>,
    registry: Arc<connection::Registry>,
) -> Controller<K>
where
    K: ConnectionLike,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, scope.watch())
        .backoff(watch_backoff())
        .reflect(writer)
        .applied_objects()
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
            .filter(|c| format!("{:?}", c.kind) == K::kind(&()))
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
    /// The Secrets the connection reads.
    fn secret_names(&self) -> Vec<String>;
    /// The connection's Ready condition, if it has one.
    fn ready(&self) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>;
}

fn ready_of(
    status: Option<&crate::api::ConnectionStatus>,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.and_then(|s| reconcile::conditions::find(&s.conditions, reconcile::conditions::READY))
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
    fn secret_names(&self) -> Vec<String> {
        secret_names(&self.spec.connection)
    }
    fn ready(&self) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        ready_of(self.status.as_ref())
    }
}

impl ConnectionLike for ClusterBitbucketConnection {
    fn secret_names(&self) -> Vec<String> {
        secret_names(&self.spec.connection)
    }
    fn ready(&self) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        ready_of(self.status.as_ref())
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &reconcile::Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    reconcile::publish::error_policy(obj.as_ref(), error, &ctx)
}

/// Changes the log filter of the running process.
pub type LogLevelControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// `/healthz` (the process runs), `/readyz` (the watches have synced, or a standby knows
/// it is one), `/metrics`, and optionally `PUT /debug/log-level`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    log_level: Option<LogLevelControl>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::{get, put};
    let mut app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the watches have not synced yet",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    if let Some(control) = log_level {
        // PUT a filter ("debug", "bitbucket_webhook_operator=trace") to change logging
        // without a restart.
        app = app.route(
            "/debug/log-level",
            put(move |body: String| {
                let result = control(body.trim());
                async move {
                    match result {
                        Ok(()) => (
                            StatusCode::OK,
                            format!("log filter set to {}\n", body.trim()),
                        ),
                        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
                    }
                }
            }),
        );
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What one set of controllers watches: one namespace or all, objects matching a label selector,
/// and whether it serves ClusterBitbucketConnections.
#[derive(Clone, Debug)]
struct Scope {
    namespace: Option<String>,
    selector: Option<String>,
    cluster_connections: bool,
}

impl Scope {
    /// The API of a namespaced kind, in the watched namespace or all.
    fn api<K>(&self, client: &kube::Client) -> Api<K>
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
    fn watch(&self) -> watcher::Config {
        match &self.selector {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        }
    }
}

/// Runs the controllers while this replica holds the leader Lease (or always, without
/// leader election). Returns when `shutdown` resolves or leadership is lost; a lost
/// lease ends the process so that it restarts as a standby and never writes twice.
pub async fn run_elected(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let Some(election) = config.leader_election.clone() else {
        run(client, config, metrics, ready, shutdown).await;
        return Ok(());
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration_seconds)
        .with_grace(election.duration_seconds.div_ceil(3).max(1))
        // The default field manager is per identity; a shared one would let two replicas'
        // server-side applies both "win" the Lease.
        .build()
        .await
        .map_err(|e| {
            format!(
                "cannot set up leader election on Lease {}/{}: {e}",
                election.namespace, election.lease
            )
        })?;
    let (mut leader, lease_task) = manager.watch().await;
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tracing::info!(lease = %election.lease, identity = %election.identity, "waiting to become the leader");
    // A standby is ready too: it knows the lease state and serves its probes.
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::select! {
        _ = shutdown.clone() => return Ok(()),
        acquired = leader.wait_for(|is_leader| *is_leader) => {
            acquired.map_err(|_| "the leader election task stopped".to_owned())?;
        }
    }
    tracing::info!(identity = %election.identity, "became the leader");
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut watch_leader = leader.clone();
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = watch_leader.wait_for(|is_leader| !*is_leader) => {
                    lost_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    };
    run(client, config, metrics, ready, stop).await;
    // Dropping the receivers makes the lease task release the Lease.
    drop(leader);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), lease_task).await;
    if lost.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(format!(
            "lost the leader Lease {}/{}; exiting to restart as a standby",
            election.namespace, election.lease
        ));
    }
    Ok(())
}
