//! Controller wiring: which watches trigger which reconciles.

mod connections;
mod watches;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use self::watches::{NoWait, Scope, slim, watch_backoff};
use crate::api::{
    BitbucketConnection, ClusterBitbucketConnection, ConnectionKind, WEBHOOKSET_LABEL, Webhook,
    WebhookSet,
};
use crate::metrics::Metrics;
use crate::reconcile::{self, Config, Context, SetContext, Shared, retries};
use std::sync::atomic::AtomicBool;

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
        let on_synced = synced_one(synced.clone(), index, ready.clone());
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
        if let Some(ctx) = first.filter(|_| config.cluster_connections) {
            cluster_connections(&client, ctx, stopped()).await;
        }
    };
    futures::join!(futures::future::join_all(shards), cluster);
}

/// Marks namespace `index`'s Webhook watch synced; the operator is ready once all are.
fn synced_one(
    synced: Arc<Vec<AtomicBool>>,
    index: usize,
    ready: Arc<AtomicBool>,
) -> impl Fn() + Send + Sync + 'static {
    use std::sync::atomic::Ordering::Relaxed;
    move || {
        if let Some(flag) = synced.get(index) {
            flag.store(true, Relaxed);
        }
        if synced.iter().all(|f| f.load(Relaxed)) {
            ready.store(true, Relaxed);
        }
    }
}

/// The one ClusterBitbucketConnection controller (its Secrets in the operator's
/// namespace), on the first shard's context.
async fn cluster_connections(
    client: &kube::Client,
    ctx: Arc<Context>,
    stopped: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = ctx.config.cluster_secret_namespace.clone();
    let secrets = Scope {
        namespace: Some(namespace.clone()),
        selector: ctx.config.selector.clone(),
        cluster_connections: true,
    };
    connections::controller::<ClusterBitbucketConnection>(
        client,
        Api::all(client.clone()),
        &secrets,
        Some(namespace),
        ctx.connections.clone(),
    )
    .graceful_shutdown_on(stopped)
    .run(
        reconcile::reconcile_cluster_connection,
        error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {})
    .await;
}

/// The controllers of one namespace (or of all): Webhooks, BitbucketConnections and
/// WebhookSets.
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
    let (webhooks, writer) = reflector::store();
    let webhook_stream =
        watches::webhooks(client, &scope, writer, shared.claims.clone(), on_synced);
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
    let secrets = watches::secret_versions(client, &scope, secrets_writer, ctx.secrets.clone());
    let writers = ConnectionWriters {
        namespaced: connections_writer,
        cluster: cluster_writer,
        watch_receivers: config.watch_flux_receivers,
    };
    let webhook_controller =
        webhook_controller(client, &scope, webhook_stream, webhooks, secrets, writers)
            // Webhooks that found Bitbucket failing are retried when it answers again
            // (paced by the budget), not each after its own backoff.
            .reconcile_on(
                retries::due(ctx.connections.clone(), scope.namespace.clone())
                    .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace)),
            )
            .with_config(controller::Config::default().concurrency(config.concurrency))
            .graceful_shutdown_on(stopped())
            .run(
                reconcile::reconcile_webhook,
                reconcile::webhook_error_policy,
                ctx.clone(),
            )
            .for_each(|_| async {});
    let namespaced = connections::controller::<BitbucketConnection>(
        client,
        scope.api(client),
        &scope,
        None,
        ctx.connections.clone(),
    )
    .graceful_shutdown_on(stopped())
    .run(reconcile::reconcile_connection, error_policy, ctx.clone())
    .for_each(|_| async {});
    let (set_children, set_children_writer) = reflector::store();
    let sets = set_controller(client, &scope, set_children_writer)
        .graceful_shutdown_on(stopped())
        .run(
            reconcile::reconcile_webhookset,
            reconcile::webhookset_error_policy,
            Arc::new(SetContext::new(ctx.clone(), set_children)),
        )
        .for_each(|_| async {});
    let work = async move {
        futures::join!(webhook_controller, namespaced, sets);
    };
    (ctx, work)
}

/// Where the Webhook controller's connection watches keep what they saw, and whether it
/// watches Flux Receivers too.
struct ConnectionWriters {
    namespaced: reflector::store::Writer<BitbucketConnection>,
    cluster: reflector::store::Writer<ClusterBitbucketConnection>,
    watch_receivers: bool,
}

/// The Webhook controller: Webhooks, and the connections and Secrets they use.
fn webhook_controller(
    client: &kube::Client,
    scope: &Scope,
    webhook_stream: impl futures::Stream<Item = Result<DeserializeGuard<Webhook>, watcher::Error>>
    + Send
    + 'static,
    webhooks: Store<DeserializeGuard<Webhook>>,
    secrets: impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>>
    + Send
    + 'static,
    writers: ConnectionWriters,
) -> Controller<DeserializeGuard<Webhook>> {
    let (by_connection, by_secret) = (webhooks.clone(), webhooks.clone());
    let mut controller = Controller::for_stream(webhook_stream, webhooks.clone())
        .trigger_backoff(NoWait)
        .watches_stream(
            watches::connection_events(
                scope.api::<BitbucketConnection>(client),
                scope.watch(),
                writers.namespaced,
            ),
            move |c| {
                watches::webhooks_using(
                    &by_connection,
                    ConnectionKind::BitbucketConnection,
                    c.namespace(),
                    c.name_any(),
                )
            },
        )
        .watches_stream(secrets, move |secret| {
            watches::webhooks_signed_with(&by_secret, secret.namespace(), &secret.name_any())
        });
    if writers.watch_receivers {
        // Webhooks bound to a Flux Receiver follow its path and readiness.
        let receivers = watches::receiver_changes(client, scope, webhooks.clone());
        controller = controller.reconcile_on(receivers);
    }
    if scope.cluster_connections {
        controller = controller.watches_stream(
            watches::connection_events(
                Api::<ClusterBitbucketConnection>::all(client.clone()),
                scope.watch(),
                writers.cluster,
            ),
            move |c| {
                watches::webhooks_using(
                    &webhooks,
                    ConnectionKind::ClusterBitbucketConnection,
                    None,
                    c.name_any(),
                )
            },
        );
    }
    controller
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
