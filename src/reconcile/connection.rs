//! Connections: from a (Cluster)BitbucketConnection and its Secrets to a ready client,
//! and the connection reconciler that verifies credentials with one cheap call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Outcome, Status};
use super::{Context, Error, Invalid, Refusal, SecretProblem, finalizer};
use crate::api::{
    BitbucketConnection, BudgetStatus, ClusterBitbucketConnection, ConnectionKind, ConnectionSpec,
    ConnectionStatus, FIELD_MANAGER, Reason, ReportedLimit, VerifiedBy,
};
use crate::bitbucket::{self, Budget, ConnectionConfig, Credentials, TlsOptions, WebhookBackend};

/// A connection's key: "Kind/namespace/name" (no namespace for cluster connections).
pub fn key_of(kind: ConnectionKind, namespace: Option<&str>, name: &str) -> String {
    format!("{kind:?}/{}/{name}", namespace.unwrap_or(""))
}

/// A connection's budget when its spec names none (the CRD's default).
pub const DEFAULT_REQUESTS_PER_HOUR: u32 = 900;

/// Either kind of connection, as the reconcilers need it.
#[derive(Clone, Debug)]
pub struct View {
    pub kind: ConnectionKind,
    pub name: String,
    /// The connection's namespace (None for cluster connections).
    pub namespace: Option<String>,
    /// Where its credential Secrets are.
    pub secret_namespace: String,
    pub spec: ConnectionSpec,
    pub status: Option<ConnectionStatus>,
    pub generation: Option<i64>,
    pub uid: String,
}

/// A connection's name in metrics: "namespace/name" for a BitbucketConnection, "name"
/// for a ClusterBitbucketConnection (no namespace).
pub fn metric_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl View {
    pub fn namespaced(c: &BitbucketConnection) -> View {
        let namespace = c.namespace().unwrap_or_default();
        View {
            kind: ConnectionKind::BitbucketConnection,
            name: c.name_any(),
            namespace: Some(namespace.clone()),
            secret_namespace: namespace,
            spec: c.spec.connection.clone(),
            status: c.status.clone(),
            generation: c.metadata.generation,
            uid: c.uid().unwrap_or_default(),
        }
    }

    pub fn cluster(c: &ClusterBitbucketConnection, secret_namespace: &str) -> View {
        View {
            kind: ConnectionKind::ClusterBitbucketConnection,
            name: c.name_any(),
            namespace: None,
            secret_namespace: secret_namespace.to_owned(),
            spec: c.spec.connection.clone(),
            status: c.status.clone(),
            generation: c.metadata.generation,
            uid: c.uid().unwrap_or_default(),
        }
    }

    /// The connection's name in metrics: "namespace/name", or "name" for a cluster one.
    pub fn metric_name(&self) -> String {
        metric_name(self.namespace.as_deref(), &self.name)
    }

    /// A key naming this connection in caches: kind/namespace/name.
    /// The connection's request budget per hour.
    pub fn requests_per_hour(&self) -> u32 {
        self.spec
            .rate_limit
            .as_ref()
            .map_or(DEFAULT_REQUESTS_PER_HOUR, |r| {
                u32::try_from(r.requests_per_hour).unwrap_or(1).max(1)
            })
    }

    /// The Bitbucket this connection reaches: its flavor and API root, normalised. Two
    /// connections with the same server manage the same hooks.
    pub fn server(&self) -> String {
        let base = self
            .spec
            .base_url
            .as_deref()
            .unwrap_or(bitbucket::CLOUD_API)
            .trim_end_matches('/')
            .to_ascii_lowercase();
        format!("{:?} {base}", self.spec.flavor)
    }

    pub fn key(&self) -> String {
        key_of(self.kind, self.namespace.as_deref(), &self.name)
    }

    /// Whether the connection verified its credentials for its current spec.
    pub fn readiness(&self) -> Result<(), Error> {
        let status = self.status.as_ref();
        let ready = status.and_then(|s| conditions::find(&s.conditions, conditions::READY));
        match ready {
            Some(c) if c.status == "True" && c.observed_generation == self.generation => Ok(()),
            Some(c) if c.status != "True" => Err(Error::ConnectionNotReady {
                name: self.name.clone(),
                reason: c.reason.parse().unwrap_or(Reason::ConnectionNotReady),
                message: c.message.clone(),
            }),
            _ => Err(Error::ConnectionNotReady {
                name: self.name.clone(),
                reason: Reason::Verifying,
                message: "its credentials have not been verified yet".to_owned(),
            }),
        }
    }
}

struct Entry {
    fingerprint: String,
    backend: Arc<dyn WebhookBackend>,
}

/// Clients per connection, rebuilt when the connection or its Secrets change. Budgets
/// belong to a credential on a server, as Bitbucket counts: connections that share a
/// credential share its budget and any pause after a 429, and a rebuild keeps them.
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    /// Connection key -> the key of the budget it uses.
    budget_of: Mutex<HashMap<String, String>>,
    /// Connection key -> the requests per hour it asks for (its rateLimit).
    asks: Mutex<HashMap<String, u32>>,
    /// Budget keys whose pause just started, or whose Bitbucket started failing or
    /// answers again, for the connection controllers.
    paused: tokio::sync::broadcast::Sender<String>,
    /// Budget keys whose Bitbucket answers again after failing, for the Webhook
    /// controllers: the Webhooks waiting on it are retried then, not after their backoff.
    answering: tokio::sync::broadcast::Sender<String>,
    /// Connection key -> the Webhooks (namespace, name) whose last reconcile found its
    /// Bitbucket failing.
    waiting: Parked,
    /// Whether namespaced connections may reach private addresses (an admin's flag).
    namespaced_private_targets: bool,
    /// Connection key -> when its Webhooks last asked for it to be proven again.
    proving: Mutex<HashMap<String, std::time::Instant>>,
    /// Connection key -> the Webhooks (namespace, name) Bitbucket refused for the
    /// credential (a missing scope or permission): retried when its client is rebuilt
    /// (its Secret or spec changed), not at their next resync.
    stalled: Parked,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(false)
    }
}

/// Webhooks (namespace, name) kept per connection until something retries them.
type Parked = Mutex<HashMap<String, std::collections::HashSet<(String, String)>>>;

fn park(map: &Parked, connection: String, namespace: String, name: String) {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(connection)
        .or_default()
        .insert((namespace, name));
}

/// Reads one key of a Secret as text.
pub async fn secret_value(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<(String, String), Error> {
    let secret = ctx
        .secret(namespace, name)
        .await?
        .ok_or_else(|| Error::SecretNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let version = format!(
        "{}/{}",
        secret.uid().unwrap_or_default(),
        secret.resource_version().unwrap_or_default()
    );
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| {
            Error::from(SecretProblem::MissingKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            })
        })?;
    let text = String::from_utf8(value.0.clone()).map_err(|_| {
        Error::from(SecretProblem::NotText {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        })
    })?;
    Ok((text, version))
}

impl Registry {
    pub fn new(namespaced_private_targets: bool) -> Registry {
        Registry {
            entries: Mutex::default(),
            budgets: Mutex::default(),
            budget_of: Mutex::default(),
            asks: Mutex::default(),
            paused: tokio::sync::broadcast::channel(64).0,
            answering: tokio::sync::broadcast::channel(64).0,
            waiting: Mutex::default(),
            namespaced_private_targets,
            proving: Mutex::default(),
            stalled: Mutex::default(),
        }
    }

    /// A Webhook Bitbucket refused for what the connection's credential is or holds.
    pub fn stall(&self, connection: String, namespace: String, name: String) {
        park(&self.stalled, connection, namespace, name);
    }

    /// The connection's client was rebuilt (its credential or spec changed): the
    /// Webhooks it stalled are retried now, through the path that retries Webhooks when
    /// Bitbucket answers again.
    fn release_stalled(&self, connection: &str, budget_key: &str) {
        let Some(stalled) = self
            .stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(connection)
        else {
            return;
        };
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(connection.to_owned())
            .or_default()
            .extend(stalled);
        let _ = self.answering.send(budget_key.to_owned());
    }

    /// Has the controller verify an Unverified connection again (at most every
    /// `PROVE_EVERY` per connection), now that a Webhook names a repository that can prove
    /// its credential; until then it would wait for its resync.
    pub fn ask_to_prove(&self, view: &View) {
        const PROVE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
        let unverified = view
            .status
            .as_ref()
            .is_some_and(|s| s.verified_by == Some(VerifiedBy::Unverified));
        if !unverified {
            return;
        }
        let key = view.key();
        let Some(budget) = self
            .budget_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
        else {
            return;
        };
        let now = std::time::Instant::now();
        let mut proving = self.proving.lock().unwrap_or_else(|p| p.into_inner());
        if proving
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < PROVE_EVERY)
        {
            return;
        }
        proving.insert(key, now);
        // The connection controllers reconcile every connection on a budget it names.
        let _ = self.paused.send(budget);
    }

    /// A Webhook waits for its connection's Bitbucket to answer again. False when it
    /// already does (an answer came since this Webhook's failure, and with it the
    /// retry of those waiting, too early for this one): retry soon instead.
    pub fn wait(&self, connection: String, namespace: String, name: String) -> bool {
        let failing = self
            .budget_of_connection(&connection)
            .is_none_or(|budget| budget.failing());
        if failing {
            park(&self.waiting, connection, namespace, name);
        }
        failing
    }

    /// A Webhook no longer waits (it succeeded, or is gone).
    pub fn stop_waiting(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        for map in [&self.waiting, &self.stalled] {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            for set in map.values_mut() {
                set.remove(&key);
            }
            map.retain(|_, set| !set.is_empty());
        }
    }

    /// The Webhooks waiting on the connections that use `budget_key` and in a namespace
    /// `ours` accepts, no longer waiting once taken.
    pub fn take_waiting(
        &self,
        budget_key: &str,
        ours: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let connections = self.connections_on(budget_key);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        for connection in connections {
            if let Some(set) = waiting.get_mut(&connection) {
                set.retain(|(namespace, name)| {
                    let mine = ours(namespace);
                    if mine {
                        taken.push((namespace.clone(), name.clone()));
                    }
                    !mine
                });
            }
        }
        waiting.retain(|_, set| !set.is_empty());
        taken
    }

    /// Budget keys whose Bitbucket answers again after failing.
    pub fn answering(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.answering.subscribe()
    }

    /// Since when a connection's Bitbucket has been failing, while it is.
    pub fn failing_since(&self, view: &View) -> Option<jiff::Timestamp> {
        self.budget(view)?.failing_since()
    }

    fn budget(&self, view: &View) -> Option<Arc<Budget>> {
        self.budget_of_connection(&view.key())
    }

    /// The budget a connection (by `View::key`) uses, once a client was built for it.
    fn budget_of_connection(&self, connection: &str) -> Option<Arc<Budget>> {
        let budget_key = self
            .budget_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection)
            .cloned()?;
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&budget_key)
            .cloned()
    }

    /// Whether a connection's probe may go to private addresses: a cluster connection when
    /// it says so, a namespaced one only if the operator's admin allows it too.
    pub fn allow_private_targets(&self, view: &View) -> bool {
        view.spec.allow_private_targets
            && (view.namespace.is_none() || self.namespaced_private_targets)
    }

    /// A namespaced connection's `baseURL` must not lead to a private, loopback,
    /// link-local or cluster-internal address unless the operator's admin allows it.
    async fn check_base_url(&self, view: &View) -> Result<(), Error> {
        if view.namespace.is_none() || self.namespaced_private_targets {
            return Ok(());
        }
        let Some(base) = view.spec.base_url.as_deref() else {
            return Ok(());
        };
        let Ok(url) = reqwest::Url::parse(base) else {
            return Ok(()); // the client reports a malformed baseURL
        };
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let refused = |kind: &'static str| {
            Error::from(Refusal::PrivateBaseUrl {
                base: base.to_owned(),
                kind,
            })
        };
        if crate::health::probe::forbidden_host(&host) {
            return Err(refused("cluster-internal or local"));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        // An unresolvable name is the client's to report, as for any connection.
        if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
            for addr in addrs {
                if let Some(kind) = crate::health::probe::forbidden_address(addr.ip()) {
                    return Err(refused(kind));
                }
            }
        }
        Ok(())
    }

    /// The client for a connection, building it if the connection or a Secret changed.
    pub async fn backend(
        &self,
        ctx: &Context,
        view: &View,
    ) -> Result<Arc<dyn WebhookBackend>, Error> {
        let secret_name = &view.spec.auth.secret_ref.name;
        let secret = ctx
            .secret(&view.secret_namespace, secret_name)
            .await?
            .ok_or_else(|| Error::SecretNotFound {
                namespace: view.secret_namespace.clone(),
                name: secret_name.clone(),
            })?;
        let mut fingerprint = format!(
            "{}/{:?}/{}",
            view.uid,
            view.generation,
            secret.resource_version().unwrap_or_default()
        );
        let mut ca = None;
        if let Some(reference) = view
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.ca_bundle_secret_ref.as_ref())
        {
            let (pem, version) =
                secret_value(ctx, &view.secret_namespace, &reference.name, &reference.key).await?;
            fingerprint.push_str(&version);
            ca = Some(pem.into_bytes());
        }
        let key = view.key();
        let rebuilt = match self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            Some(entry) if entry.fingerprint == fingerprint => return Ok(entry.backend.clone()),
            Some(_) => true,
            None => false,
        };
        // Checked as the client is built: a name that resolves elsewhere later is not
        // caught (the probe pins its address; this does not).
        self.check_base_url(view).await?;
        let data = secret.data.clone().unwrap_or_default();
        let credentials = Credentials::from_secret(
            view.spec.auth.type_,
            &format!("{}/{secret_name}", view.secret_namespace),
            &data,
        )
        .map_err(SecretProblem::Credentials)?;
        // One allowance per whom Bitbucket counts (a user, or an access token) on a
        // server, whatever each connection's rateLimit: the smallest of them stands.
        let limit = view.requests_per_hour();
        let budget_key = format!(
            "{}|{}",
            view.spec
                .base_url
                .as_deref()
                .unwrap_or(bitbucket::CLOUD_API)
                .trim_end_matches('/')
                .to_ascii_lowercase(),
            credentials.counted_as()
        );
        let budget = self
            .budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(budget_key.clone())
            .or_insert_with(|| {
                let budget = Arc::new(Budget::per_hour(limit));
                let paused = self.paused.clone();
                let key = budget_key.clone();
                budget.set_on_pause(Arc::new(move || {
                    let _ = paused.send(key.clone());
                }));
                let (paused, answering) = (self.paused.clone(), self.answering.clone());
                let key = budget_key.clone();
                budget.set_on_outage(Arc::new(move |health| {
                    // The connection shows it either way; waiting Webhooks go on answers.
                    let _ = paused.send(key.clone());
                    if health == bitbucket::budget::Health::Answering {
                        let _ = answering.send(key.clone());
                    }
                }));
                budget
            })
            .clone();
        self.budget_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.key(), budget_key.clone());
        self.asks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.key(), limit);
        budget.set_allowance(self.smallest_ask(&budget_key).unwrap_or(limit));
        let tls = TlsOptions {
            ca_bundle_pem: ca,
            insecure_skip_verify: view
                .spec
                .tls
                .as_ref()
                .is_some_and(|t| t.insecure_skip_verify),
        };
        let backend = bitbucket::connect(ConnectionConfig {
            flavor: view.spec.flavor,
            base_url: view.spec.base_url.clone(),
            credentials,
            tls,
            budget,
            retry: ctx.config.retry.clone(),
            observer: Some(bitbucket::Observer {
                connection: view.metric_name(),
                metrics: ctx.metrics.clone(),
            }),
        })
        .map_err(|e| Invalid::Connection(e.to_string()))?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                Entry {
                    fingerprint,
                    backend: backend.clone(),
                },
            );
        if rebuilt {
            self.release_stalled(&key, &budget_key);
        }
        Ok(backend)
    }

    /// The client last built for a connection, whatever changed since: what a Webhook's
    /// cleanup uses when the credential Secret was deleted first (a namespace or an app
    /// deleted at once). In memory only: after a restart it is gone.
    pub fn last(&self, view: &View) -> Option<Arc<dyn WebhookBackend>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view.key())
            .map(|e| e.backend.clone())
    }

    /// Budget keys, as their pause after a Bitbucket 429 starts.
    pub fn pauses(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.paused.subscribe()
    }

    /// The smallest rateLimit among the connections on a budget.
    fn smallest_ask(&self, budget_key: &str) -> Option<u32> {
        let on = self.connections_on(budget_key);
        let asks = self.asks.lock().unwrap_or_else(|p| p.into_inner());
        on.iter().filter_map(|c| asks.get(c)).min().copied()
    }

    /// A connection is gone: its rateLimit no longer counts toward its budget's.
    pub fn forget(&self, view: &View) {
        let key = view.key();
        self.asks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let budget_key = self
            .budget_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        if let Some(budget_key) = budget_key
            && let Some(budget) = self
                .budgets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&budget_key)
                .cloned()
            && let Some(smallest) = self.smallest_ask(&budget_key)
        {
            budget.set_allowance(smallest);
        }
    }

    /// What a connection's budget allows and what Bitbucket reported, for its status.
    pub fn allowance(&self, view: &View) -> Option<(u32, usize, Vec<bitbucket::budget::Reported>)> {
        let budget_key = self
            .budget_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view.key())
            .cloned()?;
        let budget = self.budget_of_connection(&view.key())?;
        Some((
            budget.limit(),
            self.connections_on(&budget_key).len(),
            budget.reported(),
        ))
    }

    /// The connection keys (`View::key`) that use a budget.
    pub fn connections_on(&self, budget_key: &str) -> Vec<String> {
        self.budget_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, b)| *b == budget_key)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Until when a connection's requests wait after a Bitbucket 429, if they do.
    pub fn paused_until(&self, view: &View) -> Option<jiff::Timestamp> {
        self.budget(view)?.paused_until().map(|(_, at)| at)
    }
}

fn verified_message(identity: &bitbucket::Identity) -> String {
    let who = match &identity.user {
        Some(user) => format!("authenticated to Bitbucket as {user}"),
        None => "Bitbucket accepted the credential".to_owned(),
    };
    match &identity.detail {
        Some(detail) => format!("{who}; {detail}"),
        None => who,
    }
}

/// The condition a connection carries while Bitbucket's rate limit pauses its requests.
pub const RATE_LIMITED: &str = "RateLimited";

/// The condition a connection carries while Bitbucket fails its requests.
pub const BITBUCKET_UNAVAILABLE: &str = "BitbucketUnavailable";

/// The status as it was, with the condition `type_` set to `outcome` (the others, Ready
/// among them, kept as they are).
fn with_condition(
    previous: ConnectionStatus,
    type_: &str,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) -> ConnectionStatus {
    let mut conditions: Vec<_> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    conditions.push(conditions::condition(
        &previous.conditions,
        type_,
        outcome,
        generation,
        now,
    ));
    ConnectionStatus {
        conditions,
        ..previous
    }
}

/// Verifies a connection and returns its new status.
async fn verify(view: &View, ctx: &Context) -> (ConnectionStatus, Option<Error>) {
    let now = Time(jiff::Timestamp::now());
    let previous = view.status.clone().unwrap_or_default();
    if let Some(until) = ctx.connections.paused_until(view) {
        // No request may go out now; Ready stays what the last check found.
        let status = with_condition(
            previous,
            RATE_LIMITED,
            &Outcome::new(
                Status::True,
                Reason::RateLimited,
                format!(
                    "Bitbucket answered 429 (too many requests for this credential): every request waits until {until}"
                ),
            ),
            view.generation,
            &now,
        );
        let left = std::time::Duration::try_from(until.duration_since(jiff::Timestamp::now()))
            .unwrap_or_default();
        let paused = bitbucket::Error::RateLimited {
            retry_after: Some(left),
            local: false,
        };
        return (status, Some(paused.into()));
    }
    let result = match ctx.connections.backend(ctx, view).await {
        Ok(backend) => prove(view, ctx, backend.as_ref())
            .await
            .map_err(|e| app_password_hint(view, e)),
        Err(e) => Err(e),
    };
    let verified_before = conditions::find(&previous.conditions, conditions::READY)
        .is_some_and(|c| c.status == "True" && c.observed_generation == view.generation);
    // Bitbucket's own failures; not the operator's budget being spent.
    if let Err(e @ Error::Bitbucket(failure)) = &result
        && failure.retryable()
        && !matches!(failure, bitbucket::Error::RateLimited { local: true, .. })
        && verified_before
    {
        // Bitbucket fails now, not the credential: Ready stays, and the outage is said
        // apart until Bitbucket answers again.
        let since = ctx
            .connections
            .failing_since(view)
            .map_or_else(|| "now".to_owned(), |t| t.to_string());
        let status = with_condition(
            previous,
            BITBUCKET_UNAVAILABLE,
            &Outcome::new(
                Status::True,
                e.reason(),
                format!(
                    "Bitbucket fails the requests of this credential (since {since}): {e}; Webhooks waiting on it are retried as soon as it answers again"
                ),
            ),
            view.generation,
            &now,
        );
        return (status, result.err());
    }
    let (outcome, proof, error) = match result {
        Ok(proof) => (
            Outcome::new(Status::True, proof.reason, proof.message.clone()),
            Some(proof),
            None,
        ),
        Err(e) => (
            Outcome::new(Status::False, e.reason(), e.to_string()),
            None,
            Some(e),
        ),
    };
    let ready = conditions::condition(
        &previous.conditions,
        conditions::READY,
        &outcome,
        view.generation,
        &now,
    );
    let status = ConnectionStatus {
        observed_generation: view.generation,
        last_verified_time: if proof.is_some() {
            Some(now)
        } else {
            previous.last_verified_time.clone()
        },
        verified_by: proof.as_ref().map(|p| p.by),
        verified_repository: proof.and_then(|p| p.repository),
        budget: None,
        conditions: vec![ready],
    };
    (status, error)
}

/// What proved a connection's credential, for its status.
#[derive(Debug)]
struct Proof {
    by: VerifiedBy,
    repository: Option<String>,
    reason: Reason,
    message: String,
}

/// At most this many repositories are tried to prove a credential whose identity call
/// was refused (a repository may be gone: 404 proves nothing).
const PROOF_REPOSITORIES: usize = 3;

/// Proves the credential: the identity call, and where a refusal of it is only a hint
/// (Cloud), a listing of the hooks of a repository the connection serves.
async fn prove(view: &View, ctx: &Context, backend: &dyn WebhookBackend) -> Result<Proof, Error> {
    let refused = match backend.verify_credentials().await {
        Ok(identity) => {
            return Ok(Proof {
                by: VerifiedBy::Identity,
                repository: None,
                reason: Reason::Verified,
                message: verified_message(&identity),
            });
        }
        Err(e) if refusal(&e) && !backend.identity_is_conclusive() => e,
        Err(e) => return Err(not_bitbucket(view, e)),
    };
    let call = backend.identity_call();
    let connection = (view.kind, view.namespace.clone(), view.name.clone());
    let repositories = ctx.claims.repositories(&connection);
    for repository in repositories.iter().take(PROOF_REPOSITORIES) {
        let Some(repo) = bitbucket::RepoRef::parse(repository) else {
            continue;
        };
        match backend
            .list_hooks(&bitbucket::Place::Repository(repo))
            .await
        {
            // Listed, or refused for what the credential lacks on this repository: either
            // way Bitbucket knew the credential.
            Ok(_)
            | Err(bitbucket::Error::Forbidden { .. } | bitbucket::Error::MissingScope { .. }) => {
                return Ok(Proof {
                    by: VerifiedBy::Repository,
                    repository: Some(repository.clone()),
                    reason: Reason::Verified,
                    message: format!(
                        "Bitbucket accepted the credential when listing the hooks of {repository}; it refused {call} ({refused}), which repository and project access tokens may not call"
                    ),
                });
            }
            Err(bitbucket::Error::NotFound { .. }) => {}
            Err(bitbucket::Error::Unauthorized { message }) => {
                return Err(bitbucket::Error::Unauthorized {
                    message: format!(
                        "{message} (listing the hooks of {repository}; {call} was refused too: {refused})"
                    ),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let why = if repositories.is_empty() {
        "no Webhook uses this connection yet"
    } else {
        "the repositories its Webhooks name were not found"
    };
    let hint = if basic_on_cloud(view) && matches!(refused, bitbucket::Error::Unauthorized { .. }) {
        format!(" If it is an app password: {APP_PASSWORDS}.")
    } else {
        String::new()
    };
    Ok(Proof {
        by: VerifiedBy::Unverified,
        repository: None,
        reason: Reason::Unverified,
        message: format!(
            "Bitbucket refused {call} ({refused}), which repository and project access tokens may not call, and {why}: the credential is used as it is, and the first Webhook's requests prove it or say why not.{hint}"
        ),
    })
}

/// A Basic credential refused by Cloud is most likely an app password: Atlassian stopped
/// their creation on 2025-09-09 and turned the last ones off on 2026-07-28.
const APP_PASSWORDS: &str = "Cloud app passwords stopped working on 2026-07-28: use an Atlassian API token (username: the account's email) or an access token (auth.type Bearer)";

fn basic_on_cloud(view: &View) -> bool {
    view.spec.flavor == crate::api::Flavor::Cloud
        && view.spec.auth.type_ == crate::api::AuthType::Basic
}

fn app_password_hint(view: &View, e: Error) -> Error {
    match e {
        Error::Bitbucket(bitbucket::Error::Unauthorized { message }) if basic_on_cloud(view) => {
            bitbucket::Error::Unauthorized {
                message: format!("{message}. {APP_PASSWORDS}"),
            }
            .into()
        }
        e => e,
    }
}

/// A 401 or 403: the credential was refused (bad, or lacking what this call needs).
pub fn refusal(e: &bitbucket::Error) -> bool {
    matches!(
        e,
        bitbucket::Error::Unauthorized { .. }
            | bitbucket::Error::Forbidden { .. }
            | bitbucket::Error::MissingScope { .. }
    )
}

/// A 404 where every Bitbucket of the flavor answers the identity call: the baseURL or
/// the flavor is wrong, which the spec's owner fixes (reason InvalidSpec).
fn not_bitbucket(view: &View, e: bitbucket::Error) -> Error {
    match e {
        bitbucket::Error::NotFound { message } => Error::InvalidSpec(Invalid::Connection(format!(
            "baseURL {} does not answer as a Bitbucket {:?} API ({message}): check spec.baseURL and spec.flavor (Cloud's API is https://api.bitbucket.org/2.0; a Data Center server's is its root URL, without /rest)",
            view.spec
                .base_url
                .as_deref()
                .unwrap_or(bitbucket::CLOUD_API),
            view.spec.flavor
        ))),
        e => e.into(),
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
    let (mut status, error) = verify(&view, &ctx).await;
    status.budget = ctx
        .connections
        .allowance(&view)
        .map(|(per_hour, shared_by, reported)| BudgetStatus {
            requests_per_hour: i64::from(per_hour),
            shared_by: i64::try_from(shared_by).unwrap_or(i64::MAX),
            reported: reported
                .into_iter()
                .map(|r| ReportedLimit {
                    resource: r.resource,
                    limit: i64::from(r.limit),
                    near_limit: r.near_limit,
                    time: Time(r.at),
                })
                .collect(),
        });
    ctx.metrics.reconciled(
        &K::kind(&()),
        started.elapsed(),
        error.as_ref().map(Error::reason),
    );
    let before = view
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .cloned();
    let outage_began = conditions::find(&status.conditions, BITBUCKET_UNAVAILABLE)
        .filter(|_| {
            view.status
                .as_ref()
                .is_none_or(|s| conditions::find(&s.conditions, BITBUCKET_UNAVAILABLE).is_none())
        })
        .cloned();
    // The outage is over: said once, as its start was.
    let outage_ended = view
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, BITBUCKET_UNAVAILABLE))
        .filter(|_| conditions::find(&status.conditions, BITBUCKET_UNAVAILABLE).is_none())
        .map(|c| {
            let mut ended = c.clone();
            ended.reason = Reason::BitbucketRecovered.as_str().to_owned();
            ended.message = format!(
                "Bitbucket answers this credential's requests again (failing since {}); the Webhooks waiting on it are retried",
                c.last_transition_time.0
            );
            ended
        });
    let after = conditions::find(&status.conditions, conditions::READY)
        .cloned()
        .unwrap_or_else(|| status.conditions[0].clone());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &view.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if before
        .as_ref()
        .is_none_or(|b| b.status != after.status || b.reason != after.reason)
    {
        let type_ = if error.is_none() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        tell(&ctx, obj, type_, &after).await;
    }
    if let Some(outage) = outage_began {
        tell(&ctx, obj, EventType::Warning, &outage).await;
    }
    if let Some(recovered) = outage_ended {
        tell(&ctx, obj, EventType::Normal, &recovered).await;
    }
    match error {
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

/// An Event saying what a condition of the connection says.
async fn tell<K>(ctx: &Context, obj: &K, type_: EventType, condition: &Condition)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: condition.reason.clone(),
        note: Some(condition.message.clone()),
        action: "VerifyCredentials".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
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
    let users = ctx
        .claims
        .users(&(view.kind, view.namespace.clone(), view.name.clone()));
    if users > 0 {
        let previous = view.status.clone().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        let mut conditions: Vec<_> = previous
            .conditions
            .iter()
            .filter(|c| c.type_ != IN_USE)
            .cloned()
            .collect();
        conditions.push(conditions::condition(
            &previous.conditions,
            IN_USE,
            &Outcome::new(
                Status::True,
                Reason::InUse,
                format!(
                    "being deleted: kept until the {users} Webhook(s) using it are gone, so their cleanup can reach Bitbucket"
                ),
            ),
            view.generation,
            &now,
        ));
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": ConnectionStatus { conditions, ..previous },
        });
        api.patch_status(
            &view.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        // Webhooks finish their cleanup within seconds; look again soon.
        return Ok(Action::requeue(std::time::Duration::from_secs(2)));
    }
    ctx.connections.forget(view);
    finalizer::release(api, obj).await?;
    Ok(Action::await_change())
}

/// The condition a connection carries while it is being deleted and Webhooks still use it.
pub const IN_USE: &str = "InUse";

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
