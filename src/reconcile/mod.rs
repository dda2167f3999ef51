//! Reconcilers: each is a pipeline dereference -> validate -> plan -> apply -> status,
//! with the pure parts ([`plan`], [`conditions`]) apart from the I/O.

pub mod cache;
pub mod claims;
pub mod conditions;
pub mod connection;
mod error;
pub mod finalizer;
pub mod handover;
pub mod plan;
pub mod publish;
pub mod secrets;
pub mod webhook;
pub mod webhookset;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::core::DeserializeGuard;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};

pub use error::{Error, Invalid, Refusal, SecretProblem};
// What the rest of the operator uses of the reconcilers: their entry points (for the
// controllers' wiring), the Webhook's offline checks (for `check`) and where its hook
// lives (for `inventory`).
pub use connection::retries;
pub use connection::{
    Registry, reconcile_cluster as reconcile_cluster_connection,
    reconcile_namespaced as reconcile_connection,
};
pub use webhook::url_from::{RECEIVER_GROUP, RECEIVER_VERSION};
pub use webhook::{check_events, check_spec, place as webhook_place};
pub use webhook::{error_policy as webhook_error_policy, reconcile as reconcile_webhook};
pub use webhookset::{
    SetContext, error_policy as webhookset_error_policy, reconcile as reconcile_webhookset,
};

use crate::api::{Flavor, Webhook};
use crate::bitbucket::RetryPolicy;
use crate::identity::ConnectionId;

/// Settings of a running operator.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often every hook is compared with Bitbucket (jittered per repository).
    pub resync_period: Duration,
    /// How long one list of a repository's hooks serves its Webhooks.
    pub list_ttl: Duration,
    /// Where ClusterBitbucketConnection credentials live.
    pub cluster_secret_namespace: String,
    /// How often Data Center delivery statistics are read (one request per hook).
    pub health_period: Duration,
    /// How old `lastSyncTime` may grow before a resync that found nothing new rewrites it.
    pub status_refresh: Duration,
    pub retry: RetryPolicy,
    /// Watch only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Watch only Webhooks and connections with these labels (sharding).
    pub selector: Option<String>,
    /// Serve ClusterBitbucketConnections (off when the operator may only see one namespace).
    pub cluster_connections: bool,
    /// Run only while holding this Lease (several replicas: one works, the others wait).
    pub leader_election: Option<LeaderElection>,
    /// Let namespaced BitbucketConnections reach private, loopback, link-local and
    /// cluster-internal addresses (`baseURL`, and the probe with `allowPrivateTargets`).
    /// A cluster admin's choice: off, a namespace's user could point the operator's
    /// network access anywhere inside the cluster.
    pub namespaced_private_targets: bool,
    /// Watch Flux Receivers, so Webhooks bound to one follow it at once.
    pub watch_flux_receivers: bool,
    /// Reconciles at once, per controller (reconciles mostly wait on the network).
    pub concurrency: u16,
    /// How many of them, process-wide, may be periodic work (resyncs, health polls of
    /// Webhooks whose status is current), so new and edited Webhooks always find a slot.
    pub periodic_concurrency: usize,
}

/// Where the leader Lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    /// Seconds a leader holds the Lease without renewing it.
    pub duration_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            resync_period: Duration::from_secs(600),
            // A resync slot finds the list expired; anything in between (health polls,
            // watch events) is served from it.
            list_ttl: Duration::from_secs(540),
            cluster_secret_namespace: "bitbucket-webhook-operator".to_owned(),
            health_period: Duration::from_secs(300),
            status_refresh: Duration::from_secs(3600),
            retry: RetryPolicy::default(),
            namespaces: Vec::new(),
            selector: None,
            cluster_connections: true,
            leader_election: None,
            namespaced_private_targets: false,
            watch_flux_receivers: false,
            concurrency: 32,
            periodic_concurrency: 8,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub config: Config,
    pub connections: Arc<connection::Registry>,
    pub lists: Arc<cache::RepoLists>,
    pub health: Arc<crate::health::Schedule>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Which Webhook claims which hook, across every watched namespace.
    pub claims: Arc<claims::Claims>,
    /// Permits for periodic work, shared by every namespace's controller.
    pub periodic: Arc<tokio::sync::Semaphore>,
    /// Hooks passing between Webhook objects (a move between namespaces).
    pub handover: Arc<handover::Handover>,
    /// Webhooks (uid) this process has reconciled, each with the instant until which its
    /// status is trusted (a restart or handover found it current: no Bitbucket call until
    /// the repository's slot).
    seen: Arc<Mutex<HashMap<String, Option<Instant>>>>,
    /// This namespace's Webhooks, for mapping connection and Secret changes.
    pub webhooks: Store<DeserializeGuard<Webhook>>,
    /// The watched connections, read before asking the API server (None: always ask).
    pub connection_cache: Option<Store<crate::api::BitbucketConnection>>,
    pub cluster_connection_cache: Option<Store<crate::api::ClusterBitbucketConnection>>,
    /// Secrets read by value, and the watch that says when a copy is stale (None: always
    /// read).
    pub secrets: Arc<secrets::SecretCache>,
    pub secret_versions: Option<secrets::Versions>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// What the controllers of every namespace share: connection clients (and so their
/// request budgets), the repository lists, the health schedule, the claims and the
/// metrics.
#[derive(Clone)]
pub struct Shared {
    pub connections: Arc<connection::Registry>,
    pub lists: Arc<cache::RepoLists>,
    pub health: Arc<crate::health::Schedule>,
    pub claims: Arc<claims::Claims>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub periodic: Arc<tokio::sync::Semaphore>,
    pub handover: Arc<handover::Handover>,
    pub secrets: Arc<secrets::SecretCache>,
    seen: Arc<Mutex<HashMap<String, Option<Instant>>>>,
}

impl Shared {
    pub fn new(config: &Config, metrics: Arc<crate::metrics::Metrics>) -> Shared {
        Shared {
            connections: Arc::new(connection::Registry::new(
                config.namespaced_private_targets,
                config.retry.clone(),
                metrics.clone(),
            )),
            lists: Arc::new(cache::RepoLists::new(config.list_ttl)),
            health: Arc::default(),
            claims: Arc::default(),
            metrics,
            periodic: Arc::new(tokio::sync::Semaphore::new(
                config.periodic_concurrency.max(1),
            )),
            handover: Arc::default(),
            secrets: Arc::default(),
            seen: Arc::default(),
        }
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        recorder: Recorder,
        config: Config,
        webhooks: Store<DeserializeGuard<Webhook>>,
        shared: &Shared,
    ) -> Context {
        Context {
            client,
            recorder,
            lists: shared.lists.clone(),
            config,
            connections: shared.connections.clone(),
            health: shared.health.clone(),
            claims: shared.claims.clone(),
            metrics: shared.metrics.clone(),
            periodic: shared.periodic.clone(),
            handover: shared.handover.clone(),
            seen: shared.seen.clone(),
            webhooks,
            connection_cache: None,
            cluster_connection_cache: None,
            secrets: shared.secrets.clone(),
            secret_versions: None,
            failures: Mutex::default(),
        }
    }

    /// What this context reads Secrets through.
    pub fn secret_reader(&self) -> secrets::SecretReader {
        secrets::SecretReader {
            client: self.client.clone(),
            versions: self.secret_versions.clone(),
            copies: self.secrets.clone(),
        }
    }

    /// Records a failure of `key` and returns how long to wait: 5s doubling to 5 minutes,
    /// each drawn between half and all of that, so objects that failed together do not
    /// all come back together.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        let ceiling = backoff_ceiling(*n);
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Whether the Webhook `uid`'s status stands without a look at Bitbucket: the first
    /// time this process sees it, a `current` and `fresh` status is trusted for `until_slot`
    /// (a restart, a leader handover), and stays trusted while it remains current.
    pub fn trusted(&self, uid: &str, current: bool, fresh: bool, until_slot: Duration) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let trusted = webhook::trust(
            seen.get(uid).copied(),
            current,
            fresh,
            until_slot,
            Instant::now(),
        );
        seen.insert(uid.to_owned(), trusted);
        trusted.is_some()
    }

    /// The resync period of the Webhooks of `connection`: the configured one, stretched
    /// when one listing per repository per period would take more than periodic work's
    /// share (half) of the credential's budget, counting the repositories of every
    /// connection sharing it (#23: 2,000 repositories on Cloud's 1,000/h resync every 4
    /// hours, not every 10 minutes).
    pub fn resync_period(&self, connection: &ConnectionId) -> Duration {
        self.config
            .resync_period
            .mul_f64(self.periodic_stretch(connection))
    }

    /// The health period, stretched alike where its polls are Bitbucket requests (Data
    /// Center's statistics); elsewhere it probes the endpoint and costs the budget nothing.
    pub fn health_period(&self, connection: &ConnectionId, flavor: Flavor) -> Duration {
        match flavor {
            Flavor::DataCenter => self
                .config
                .health_period
                .mul_f64(self.periodic_stretch(connection)),
            Flavor::Cloud | Flavor::PostWebhooks => self.config.health_period,
        }
    }

    fn periodic_stretch(&self, connection: &ConnectionId) -> f64 {
        let Some((per_hour, sharing)) = self.connections.sharing(connection) else {
            return 1.0;
        };
        let places: usize = sharing.iter().map(|c| self.claims.places(c)).sum();
        stretch(places, self.config.resync_period, per_hour)
    }

    /// Drops what the process keeps about an object that is gone.
    pub fn forget(&self, key: &str, uid: &str) {
        self.succeeded(key);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The longest backoff after `failures` failures in a row: 5 s doubling to 5 minutes.
fn backoff_ceiling(failures: u32) -> Duration {
    let seconds = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_secs(seconds.min(300))
}

/// The key of an object for backoff bookkeeping.
pub fn object_key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    ObjectRef::from_obj(obj).to_string()
}

/// Shared by the controllers' error policies.
pub fn requeue_after(ctx: &Context, key: &str, error: &Error) -> Duration {
    let backoff = ctx.backoff(key);
    error
        .retry_after()
        .map_or(backoff, |wait| wait.max(Duration::from_secs(1)))
}

/// How much to stretch periodic work's periods so that `places` listed once per `resync`
/// fit in periodic work's share of `per_hour` requests (at least 1: never shorter).
pub fn stretch(places: usize, resync: Duration, per_hour: u32) -> f64 {
    let share = f64::from(crate::bitbucket::budget::periodic_share(per_hour));
    let per_hour_needed = places as f64 * 3600.0 / resync.as_secs_f64().max(1.0);
    (per_hour_needed / share).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_work_is_stretched_to_half_the_budget() {
        let ten_minutes = Duration::from_secs(600);
        // 50 repositories every 10 minutes: 300 listings an hour, within 500.
        assert_eq!(stretch(50, ten_minutes, 1000), 1.0);
        // 2,000 on Cloud's 1,000/h: 12,000 an hour, so every 4 hours (24 x 10 min).
        assert_eq!(stretch(2000, ten_minutes, 1000), 24.0);
        let every = ten_minutes.mul_f64(stretch(2000, ten_minutes, 1000));
        assert_eq!(every, Duration::from_secs(4 * 3600));
        assert_eq!(stretch(0, ten_minutes, 1), 1.0);
    }
}
