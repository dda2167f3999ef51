//! Prometheus metrics (prometheus-client). Labels never carry secrets: connection names,
//! methods, statuses, reasons and health values only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

/// A connection and what its requests were for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurposeLabels {
    pub connection: String,
    /// writes, listings, health, verification or discovery.
    pub purpose: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub connection: String,
    pub method: String,
    /// The HTTP status, or "error" when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookKindLabels {
    pub connection: String,
    /// "unmanaged" or "duplicate".
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub condition: String,
    pub status: String,
}

/// One Webhook, so an alert can name it and route to its namespace's team.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookReadyLabels {
    pub namespace: String,
    pub name: String,
    pub connection: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookHealthLabels {
    pub namespace: String,
    pub name: String,
    pub connection: String,
    pub health: String,
}

/// What the metrics know of one Webhook after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookState {
    pub namespace: String,
    pub name: String,
    /// The connection as the request metrics name it (namespace/name, or the name of a
    /// ClusterBitbucketConnection).
    pub connection: String,
    pub health: String,
    /// The Ready condition's status: True, False or Unknown.
    pub ready: String,
}

impl WebhookState {
    fn ready_labels(&self) -> WebhookReadyLabels {
        WebhookReadyLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            connection: self.connection.clone(),
            status: self.ready.clone(),
        }
    }

    fn health_labels(&self) -> WebhookHealthLabels {
        WebhookHealthLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            connection: self.connection.clone(),
            health: self.health.clone(),
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

const REMAINING: &str =
    "Requests the connection may still send at once before its hourly budget makes it wait";

const QUEUED: &str = "Requests of the connection's credential waiting for their turn on its budget (changes before drift checks before health polls)";

const BY_PURPOSE: &str = "Requests taken from a connection's budget by what they were for: writes (create, update, delete), listings (a place's hooks), health (Data Center statistics, test deliveries), verification (the credential check, event catalogues), discovery (repository and project listings)";

/// Every metric the operator exposes on `/metrics`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    requests: Family<RequestLabels, Counter>,
    requests_by_purpose: Family<PurposeLabels, Counter>,
    budget_remaining: Family<ConnectionLabels, Gauge>,
    budget_queued: Family<ConnectionLabels, Gauge>,
    connection_hooks: Family<HookKindLabels, Gauge>,
    webhooks_by_health: Family<HealthLabels, Gauge>,
    webhooks_by_condition: Family<ConditionLabels, Gauge>,
    delivery_failures: Counter,
    /// One series per Webhook (its current state, value 1), when enabled.
    webhook_ready: Option<Family<WebhookReadyLabels, Gauge>>,
    webhook_health: Option<Family<WebhookHealthLabels, Gauge>>,
    /// Per Webhook uid: its last state, from which the gauges are counted.
    webhooks: Mutex<HashMap<String, WebhookState>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers `metric` under `name` and returns it (a handle to the registered series).
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// Registers a new metric of a default-constructed kind.
fn add<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    registered(registry, name, help, M::default())
}

/// Every value present, also at zero, so alerts and dashboards see them.
fn zeroed(by_health: &Family<HealthLabels, Gauge>, by_condition: &Family<ConditionLabels, Gauge>) {
    for health in ["Healthy", "Degraded", "Failing", "Unknown"] {
        let labels = HealthLabels {
            health: health.to_owned(),
        };
        by_health.get_or_create(&labels).set(0);
    }
    for status in ["True", "False", "Unknown"] {
        let labels = ConditionLabels {
            condition: "Ready".to_owned(),
            status: status.to_owned(),
        };
        by_condition.get_or_create(&labels).set(0);
    }
}

impl Metrics {
    /// Every metric, per-Webhook series included.
    pub fn new() -> Metrics {
        Metrics::with_per_webhook(true)
    }

    /// `per_webhook`: also one `bbwo_webhook_ready` and one `bbwo_webhook_health` series
    /// per Webhook (2 series each; off for very large installations).
    pub fn with_per_webhook(per_webhook: bool) -> Metrics {
        let mut registry = Registry::with_prefix("bbwo");
        let r = &mut registry;
        let reconciles = add(r, "reconciles", "Reconciles by kind and result (ok, error)");
        let reconcile_errors = add(
            r,
            "reconcile_errors",
            "Failed reconciles by kind and reason (the condition reason)",
        );
        let reconcile_duration = registered(
            r,
            "reconcile_duration_seconds",
            "Time one reconcile took, Bitbucket calls included",
            Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            ),
        );
        let requests = add(
            r,
            "bitbucket_requests",
            "Requests sent to Bitbucket by connection, method and HTTP status (\"error\": no answer)",
        );
        let requests_by_purpose = add(r, "bitbucket_requests_by_purpose", BY_PURPOSE);
        let budget_remaining = add(r, "bitbucket_budget_remaining", REMAINING);
        let budget_queued = add(r, "bitbucket_budget_queued", QUEUED);
        let connection_hooks = add(
            r,
            "connection_hooks",
            "Hooks on the places of a connection's Webhooks, as its listings last showed them, that no Webhook manages (kind unmanaged) or that repeat a URL of the same place (kind duplicate)",
        );
        let webhooks_by_health: Family<HealthLabels, Gauge> =
            add(r, "webhooks", "Webhooks by delivery health");
        let webhooks_by_condition: Family<ConditionLabels, Gauge> = add(
            r,
            "webhooks_by_condition",
            "Webhooks by the status of their Ready condition",
        );
        let delivery_failures = add(
            r,
            "delivery_failures_seen",
            "Failed or unanswered deliveries seen in Bitbucket's statistics",
        );
        let webhook_ready = per_webhook.then(|| {
            add(
                r,
                "webhook_ready",
                "1 for each Webhook, labelled with the status of its Ready condition",
            )
        });
        let webhook_health = per_webhook.then(|| {
            add(
                r,
                "webhook_health",
                "1 for each Webhook, labelled with its delivery health",
            )
        });
        zeroed(&webhooks_by_health, &webhooks_by_condition);
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            requests,
            requests_by_purpose,
            budget_remaining,
            budget_queued,
            connection_hooks,
            webhooks_by_health,
            webhooks_by_condition,
            delivery_failures,
            webhook_ready,
            webhook_health,
            webhooks: Mutex::default(),
        }
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn reconciled(&self, kind: &str, took: Duration, error: Option<crate::api::Reason>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: kind.to_owned(),
                    reason: reason.as_str().to_owned(),
                })
                .inc();
        }
    }

    pub fn request(&self, connection: &str, method: &str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                connection: connection.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
    }

    /// One request taken from the budget for `purpose`.
    pub fn spent(&self, connection: &str, purpose: &str) {
        self.requests_by_purpose
            .get_or_create(&PurposeLabels {
                connection: connection.to_owned(),
                purpose: purpose.to_owned(),
            })
            .inc();
    }

    pub fn budget(&self, connection: &str, remaining: u32) {
        self.budget_remaining
            .get_or_create(&ConnectionLabels {
                connection: connection.to_owned(),
            })
            .set(i64::from(remaining));
    }

    /// Requests waiting on the connection's budget now.
    pub fn queued(&self, connection: &str, waiting: usize) {
        self.budget_queued
            .get_or_create(&ConnectionLabels {
                connection: connection.to_owned(),
            })
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// A connection's unmanaged and duplicate hooks.
    pub fn connection_hooks(&self, connection: &str, unmanaged: i64, duplicates: i64) {
        for (kind, value) in [("unmanaged", unmanaged), ("duplicate", duplicates)] {
            self.connection_hooks
                .get_or_create(&HookKindLabels {
                    connection: connection.to_owned(),
                    kind: kind.to_owned(),
                })
                .set(value);
        }
    }

    pub fn delivery_failures(&self, new: u64) {
        self.delivery_failures.inc_by(new);
    }

    /// Records a Webhook's state after a reconcile (None: the Webhook is gone).
    pub fn webhook(&self, uid: &str, state: Option<WebhookState>) {
        // Under the lock, the previous state's series go down (or away) and the new one's
        // up: every scrape sees counts that add up to the Webhooks known, in O(1).
        let mut webhooks = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        let previous = match &state {
            Some(state) => {
                if webhooks.get(uid) == Some(state) {
                    return;
                }
                webhooks.insert(uid.to_owned(), state.clone())
            }
            None => webhooks.remove(uid),
        };
        if let Some(previous) = previous {
            self.health_gauge(&previous.health).dec();
            self.ready_gauge(&previous.ready).dec();
            if let Some(family) = &self.webhook_ready {
                family.remove(&previous.ready_labels());
            }
            if let Some(family) = &self.webhook_health {
                family.remove(&previous.health_labels());
            }
        }
        if let Some(state) = state {
            self.health_gauge(&state.health).inc();
            self.ready_gauge(&state.ready).inc();
            if let Some(family) = &self.webhook_ready {
                family.get_or_create(&state.ready_labels()).set(1);
            }
            if let Some(family) = &self.webhook_health {
                family.get_or_create(&state.health_labels()).set(1);
            }
        }
    }

    fn health_gauge(&self, health: &str) -> Gauge {
        self.webhooks_by_health
            .get_or_create(&HealthLabels {
                health: health.to_owned(),
            })
            .clone()
    }

    fn ready_gauge(&self, status: &str) -> Gauge {
        self.webhooks_by_condition
            .get_or_create(&ConditionLabels {
                condition: "Ready".to_owned(),
                status: status.to_owned(),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, health: &str, ready: &str) -> Option<WebhookState> {
        Some(WebhookState {
            namespace: "team-a".to_owned(),
            name: name.to_owned(),
            connection: "team-a/acme".to_owned(),
            health: health.to_owned(),
            ready: ready.to_owned(),
        })
    }

    #[test]
    fn every_documented_metric_is_exposed() {
        let m = Metrics::new();
        m.reconciled(
            "Webhook",
            Duration::from_millis(12),
            Some(crate::api::Reason::Forbidden),
        );
        m.request("ci/acme", "GET", Some(200));
        m.budget("ci/acme", 89);
        m.queued("ci/acme", 4);
        m.connection_hooks("ci/acme", 3, 1);
        m.delivery_failures(2);
        m.webhook("uid-1", state("ci", "Failing", "False"));
        let text = m.encode();
        for name in [
            "bbwo_reconciles_total{kind=\"Webhook\",result=\"error\"} 1",
            "bbwo_reconcile_errors_total{kind=\"Webhook\",reason=\"Forbidden\"} 1",
            "bbwo_reconcile_duration_seconds_bucket",
            "bbwo_bitbucket_requests_total{connection=\"ci/acme\",method=\"GET\",status=\"200\"} 1",
            "bbwo_bitbucket_budget_remaining{connection=\"ci/acme\"} 89",
            "bbwo_bitbucket_budget_queued{connection=\"ci/acme\"} 4",
            "bbwo_connection_hooks{connection=\"ci/acme\",kind=\"unmanaged\"} 3",
            "bbwo_connection_hooks{connection=\"ci/acme\",kind=\"duplicate\"} 1",
            "bbwo_webhooks{health=\"Failing\"} 1",
            "bbwo_webhooks{health=\"Healthy\"} 0",
            "bbwo_webhooks_by_condition{condition=\"Ready\",status=\"False\"} 1",
            "bbwo_delivery_failures_seen_total 2",
            "bbwo_webhook_ready{namespace=\"team-a\",name=\"ci\",connection=\"team-a/acme\",status=\"False\"} 1",
            "bbwo_webhook_health{namespace=\"team-a\",name=\"ci\",connection=\"team-a/acme\",health=\"Failing\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        // A Webhook's new state moves it between series; a deleted one leaves them.
        m.webhook("uid-2", state("chat", "Healthy", "True"));
        m.webhook("uid-2", state("chat", "Failing", "False"));
        let text = m.encode();
        assert!(
            text.contains("bbwo_webhooks{health=\"Failing\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bbwo_webhooks{health=\"Healthy\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("name=\"chat\",connection=\"team-a/acme\",health=\"Healthy\""),
            "the old per-Webhook series is gone: {text}"
        );
        m.webhook("uid-1", None);
        m.webhook("uid-2", None);
        m.webhook("uid-2", None);
        let text = m.encode();
        assert!(
            text.contains("bbwo_webhooks{health=\"Failing\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("bbwo_webhooks_by_condition{condition=\"Ready\",status=\"False\"} 0"),
            "{text}"
        );
        assert!(!text.contains("bbwo_webhook_ready{"), "{text}");
        assert!(!text.contains("bbwo_webhook_health{"), "{text}");
    }

    #[test]
    fn per_webhook_series_can_be_turned_off() {
        let m = Metrics::with_per_webhook(false);
        m.webhook("uid-1", state("ci", "Failing", "False"));
        let text = m.encode();
        assert!(
            text.contains("bbwo_webhooks{health=\"Failing\"} 1"),
            "{text}"
        );
        assert!(!text.contains("bbwo_webhook_ready"), "{text}");
        assert!(!text.contains("bbwo_webhook_health"), "{text}");
    }
}
