//! The client registry: a client per connection, rebuilt when the connection or one of
//! its Secrets changes, on the budget of its credential; the Webhooks waiting on each
//! connection; the checks that keep a namespace's connection off private addresses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::budgets::{Allowance, Budgets};
use super::retries::{Retries, WebhookName};
use super::view::View;
use crate::api::VerifiedBy;
use crate::bitbucket::{
    self, ConnectionConfig, Credentials, RetryPolicy, TlsOptions, WebhookBackend,
};
use crate::identity::{BudgetKey, ConnectionId};
use crate::metrics::Metrics;
use crate::reconcile::secrets::SecretReader;
use crate::reconcile::{Error, Invalid, Refusal, SecretProblem};

struct Entry {
    /// The connection's uid and generation and its Secrets' versions when built.
    fingerprint: String,
    backend: Arc<dyn WebhookBackend>,
}

/// Builds a client from a connection's settings: [`bitbucket::connect`], or a stand-in in
/// the driver's tests.
pub type Connector =
    Arc<dyn Fn(ConnectionConfig) -> bitbucket::Result<Arc<dyn WebhookBackend>> + Send + Sync>;

/// Clients per connection, and what they share.
pub struct Registry {
    clients: Mutex<HashMap<ConnectionId, Entry>>,
    pub budgets: Budgets,
    pub retries: Retries,
    /// When each Unverified connection's Webhooks last asked for it to be proven again.
    proving: Mutex<HashMap<ConnectionId, Instant>>,
    /// When each connection's client was last rebuilt (its credential or spec changed).
    rebuilt: Mutex<HashMap<ConnectionId, Instant>>,
    /// Whether namespaced connections may reach private addresses (an admin's flag).
    namespaced_private_targets: bool,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    connector: Connector,
}

/// An Unverified connection is proven again at most this often on its Webhooks' asking.
const PROVE_EVERY: Duration = Duration::from_secs(30);

impl Registry {
    pub fn new(
        namespaced_private_targets: bool,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registry {
            clients: Mutex::default(),
            budgets: Budgets::default(),
            retries: Retries::default(),
            proving: Mutex::default(),
            rebuilt: Mutex::default(),
            namespaced_private_targets,
            retry,
            metrics,
            connector: Arc::new(bitbucket::connect),
        }
    }

    /// The same registry building its clients with `connector`.
    pub fn with_connector(self, connector: Connector) -> Self {
        Registry { connector, ..self }
    }

    /// The client for a connection, building it if the connection or a Secret changed.
    pub async fn backend(
        &self,
        secrets: &SecretReader,
        view: &View,
    ) -> Result<Arc<dyn WebhookBackend>, Error> {
        let material = read_material(secrets, view).await?;
        let rebuilt = match self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view.id)
        {
            Some(entry) if entry.fingerprint == material.fingerprint => {
                return Ok(entry.backend.clone());
            }
            Some(_) => true,
            None => false,
        };
        // Checked as the client is built: a name that resolves elsewhere later is not
        // caught (the probe pins its address; this does not).
        if view.id.namespace.is_some() && !self.namespaced_private_targets {
            check_base_url(view).await?;
        }
        let budget_key = BudgetKey::new(view.spec.base_url.as_deref(), &material.credentials);
        // One allowance per whom Bitbucket counts, whatever each connection's rateLimit:
        // the smallest of them stands.
        let budget = self
            .budgets
            .join(&view.id, &budget_key, view.requests_per_hour());
        let backend = (self.connector)(ConnectionConfig {
            flavor: view.spec.flavor,
            base_url: view.spec.base_url.clone(),
            credentials: material.credentials,
            tls: material.tls,
            budget,
            retry: self.retry.clone(),
            observer: Some(bitbucket::Observer {
                connection: view.id.metric_label(),
                metrics: self.metrics.clone(),
            }),
        })
        .map_err(|e| Invalid::Connection(e.to_string()))?;
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                view.id.clone(),
                Entry {
                    fingerprint: material.fingerprint,
                    backend: backend.clone(),
                },
            );
        // A new credential may hold what the old one lacked.
        if rebuilt {
            self.rebuilt
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(view.id.clone(), Instant::now());
            if self.retries.release_stalled(&view.id) {
                self.budgets.announce_answering(&budget_key);
            }
        }
        Ok(backend)
    }

    /// The client last built for a connection, whatever changed since: what a Webhook's
    /// cleanup uses when the credential Secret was deleted first (a namespace or an app
    /// deleted at once). In memory only: after a restart it is gone.
    pub fn last(&self, view: &View) -> Option<Arc<dyn WebhookBackend>> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&view.id)
            .map(|e| e.backend.clone())
    }

    /// A Webhook Bitbucket refused for what the connection's credential is or holds, in a
    /// reconcile that began at `since`: it waits for the client to be rebuilt. False when
    /// that already happened since (the release came too early for this one): retry soon.
    pub fn stall(&self, connection: &ConnectionId, webhook: WebhookName, since: Instant) -> bool {
        let rebuilt = self
            .rebuilt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection)
            .is_some_and(|at| *at >= since);
        if !rebuilt {
            self.retries.stall(connection, webhook);
        }
        !rebuilt
    }

    /// A Webhook waits for its connection's Bitbucket to answer again. False when it
    /// already does (an answer came since this Webhook's failure, and with it the
    /// retry of those waiting, too early for this one): retry soon instead.
    pub fn wait(&self, connection: &ConnectionId, webhook: WebhookName) -> bool {
        let failing = self
            .budgets
            .of(connection)
            .is_none_or(|budget| budget.failing());
        if failing {
            self.retries.wait(connection, webhook);
        }
        failing
    }

    /// A Webhook no longer waits (it succeeded, or is gone).
    pub fn stop_waiting(&self, webhook: &WebhookName) {
        self.retries.done(webhook);
    }

    /// Has the controller verify an Unverified connection again (at most every
    /// `PROVE_EVERY` per connection), now that a Webhook names a repository that can prove
    /// its credential; until then it would wait for its resync.
    pub fn ask_to_prove(&self, view: &View) {
        let unverified = view
            .status
            .as_ref()
            .is_some_and(|s| s.verified_by == Some(VerifiedBy::Unverified));
        let Some(budget) = self.budgets.key_of(&view.id).filter(|_| unverified) else {
            return;
        };
        let now = Instant::now();
        let mut proving = self.proving.lock().unwrap_or_else(|p| p.into_inner());
        if proving
            .get(&view.id)
            .is_some_and(|at| now.duration_since(*at) < PROVE_EVERY)
        {
            return;
        }
        proving.insert(view.id.clone(), now);
        self.budgets.announce_to_connections(&budget);
    }

    /// Since when a connection's Bitbucket has been failing, while it is.
    pub fn failing_since(&self, view: &View) -> Option<jiff::Timestamp> {
        self.budgets.of(&view.id)?.failing_since()
    }

    /// Until when a connection's requests wait after a Bitbucket 429, if they do.
    pub fn paused_until(&self, view: &View) -> Option<jiff::Timestamp> {
        self.budgets.of(&view.id)?.paused_until().map(|(_, at)| at)
    }

    /// What a connection's budget allows and what Bitbucket reported, for its status.
    pub fn allowance(&self, view: &View) -> Option<Allowance> {
        self.budgets.allowance(&view.id)
    }

    /// The connection's credential proven by the requests made with it since its client
    /// was built (within `within`), if they prove it: see [`super::prove::by_use`].
    pub fn proven_by_use(
        &self,
        view: &View,
        within: std::time::Duration,
    ) -> Option<super::prove::Proof> {
        let budget = self.budgets.of(&view.id)?;
        if budget.failing() {
            return None;
        }
        super::prove::by_use(
            view.status.as_ref(),
            view.generation,
            budget.last_success(),
            self.rebuilt_at(&view.id),
            within,
        )
    }

    /// The requests per hour of the connection's budget and the connections sharing it
    /// (itself among them), once its client was built.
    pub fn sharing(&self, connection: &ConnectionId) -> Option<(u32, Vec<ConnectionId>)> {
        let budget = self.budgets.of(connection)?;
        let key = self.budgets.key_of(connection)?;
        Some((budget.limit(), self.budgets.connections_on(&key)))
    }

    /// When the connection's client was last rebuilt (a new credential or spec), if it was.
    pub fn rebuilt_at(&self, connection: &ConnectionId) -> Option<Instant> {
        self.rebuilt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection)
            .copied()
    }

    /// A connection is gone: its rateLimit no longer counts toward its budget's.
    pub fn forget(&self, view: &View) {
        self.budgets.forget(&view.id);
        self.proving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&view.id);
        self.rebuilt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&view.id);
    }

    /// Whether a connection's probe may go to private addresses: a cluster connection when
    /// it says so, a namespaced one only if the operator's admin allows it too.
    pub fn allow_private_targets(&self, view: &View) -> bool {
        view.spec.allow_private_targets
            && (view.id.namespace.is_none() || self.namespaced_private_targets)
    }
}

/// What a client is built from, read from the connection's Secrets.
struct Material {
    fingerprint: String,
    credentials: Credentials,
    tls: TlsOptions,
}

async fn read_material(secrets: &SecretReader, view: &View) -> Result<Material, Error> {
    let secret_name = &view.spec.auth.secret_ref.name;
    let secret = secrets
        .get(&view.secret_namespace, secret_name)
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
    let mut ca_bundle_pem = None;
    let tls = view.spec.tls.as_ref();
    if let Some(reference) = tls.and_then(|t| t.ca_bundle_secret_ref.as_ref()) {
        let (pem, version) = secrets
            .value(&view.secret_namespace, &reference.name, &reference.key)
            .await?;
        fingerprint.push_str(&version);
        ca_bundle_pem = Some(pem.into_bytes());
    }
    let data = secret.data.clone().unwrap_or_default();
    let credentials = Credentials::from_secret(
        view.spec.auth.type_,
        &format!("{}/{secret_name}", view.secret_namespace),
        &data,
    )
    .map_err(SecretProblem::Credentials)?;
    Ok(Material {
        fingerprint,
        credentials,
        tls: TlsOptions {
            ca_bundle_pem,
            insecure_skip_verify: tls.is_some_and(|t| t.insecure_skip_verify),
        },
    })
}

/// A namespaced connection's `baseURL` must not lead to a private, loopback, link-local
/// or cluster-internal address unless the operator's admin allows it.
async fn check_base_url(view: &View) -> Result<(), Error> {
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
