//! Delivery health: Data Center's statistics, the endpoint probe, and on-demand test
//! deliveries, each on its own schedule, folded into `status.delivery` and `Delivering`.

pub mod classify;
pub mod probe;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secrecy::SecretString;

use crate::api::{DeliveryStatus, EndpointStatus, Flavor, ProbeSpec, TestDeliveryStatus};
use crate::bitbucket::{DeliveryStats, Place, WebhookBackend};
use classify::{ProbeOutcome, Verdict};

/// The default time between probes.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// When each Webhook's statistics are next due and when it was last probed, and what that
/// said. In memory: after a restart every Webhook is polled once right away.
#[derive(Default)]
pub struct Schedule {
    /// Webhook uid -> (next poll due, last verdict). Polls fall on the repository's slot.
    polls: Mutex<HashMap<String, (Instant, Verdict)>>,
    probes: Mutex<HashMap<String, (Instant, Verdict)>>,
}

fn recent(
    map: &Mutex<HashMap<String, (Instant, Verdict)>>,
    key: &str,
    every: Duration,
) -> Option<(Duration, Verdict)> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    let (at, verdict) = map.get(key)?;
    let age = at.elapsed();
    (age < every).then(|| (every - age, verdict.clone()))
}

fn remember(map: &Mutex<HashMap<String, (Instant, Verdict)>>, key: &str, verdict: &Verdict) {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.to_owned(), (Instant::now(), verdict.clone()));
}

impl Schedule {
    /// Whether the Webhook's delivery statistics should be read now.
    fn poll_due(&self, key: &str) -> bool {
        self.polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_none_or(|(due, _)| Instant::now() >= *due)
    }

    /// How old the place's listing may be for this reconcile of Webhook `key` (group:
    /// its connection and place), or None when no statistics poll is due. Data Center's
    /// statistics come with the listing, so a due poll needs one made since the group's
    /// poll slot began (or a fresh one when `now`: the spec changed); however late the
    /// place's Webhooks come round, one listing per place per slot serves them all.
    pub fn statistics_due(
        &self,
        flavor: Flavor,
        key: &str,
        group: &crate::identity::ConnectionPlace,
        every: Duration,
        now: bool,
    ) -> Option<Duration> {
        let due = flavor == Flavor::DataCenter && (now || self.poll_due(key));
        due.then(|| crate::slots::since_slot(every, group))
    }

    /// The verdict of the last poll and the time to the next, if one is not due.
    fn last_poll(&self, key: &str) -> Option<(Duration, Verdict)> {
        let map = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        let (due, verdict) = map.get(key)?;
        let left = due.checked_duration_since(Instant::now())?;
        Some((left, verdict.clone()))
    }

    fn polled(&self, key: &str, verdict: &Verdict, next: Duration) {
        self.polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), (Instant::now() + next, verdict.clone()));
    }

    /// Forgets a Webhook (deleted).
    pub fn forget(&self, key: &str) {
        self.polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Everything one assessment needs.
pub struct Inputs<'a> {
    pub schedule: &'a Schedule,
    /// The Webhook's uid.
    pub key: &'a str,
    pub flavor: Flavor,
    pub backend: &'a dyn WebhookBackend,
    pub place: &'a Place,
    pub hook_id: &'a str,
    pub url: &'a str,
    pub secret: Option<&'a SecretString>,
    pub skip_cert_verification: bool,
    /// The Webhook's probe, else the connection's.
    pub probe: Option<&'a ProbeSpec>,
    pub allow_private_targets: bool,
    /// Data Center: the hook's statistics from this reconcile's repository listing, when
    /// a poll was due; None: use the last poll's verdict.
    pub stats: Option<&'a DeliveryStats>,
    /// The repository's slot group: the next poll falls on its slot.
    pub group: &'a crate::identity::ConnectionPlace,
    /// Probe now regardless of the schedule (the spec changed).
    pub now: bool,
    /// The `test-requested` annotation.
    pub test_requested: Option<&'a str>,
    pub previous: Option<&'a DeliveryStatus>,
    pub poll_every: Duration,
}

/// The result: new delivery status, the verdict, when to look again, and an event for a
/// test delivery.
pub struct Assessment {
    pub delivery: DeliveryStatus,
    pub verdict: Verdict,
    pub next: Option<Duration>,
    pub test: Option<(bool, String)>,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Polls, probes and tests as due.
pub async fn assess(inputs: Inputs<'_>) -> Assessment {
    let mut delivery = inputs.previous.cloned().unwrap_or_default();
    let mut verdicts = Vec::new();
    let mut waits = Vec::new();
    if inputs.flavor == Flavor::DataCenter {
        let (verdict, wait) = statistics(&inputs, &mut delivery);
        verdicts.push(verdict);
        waits.push(wait);
    }
    if let Some(probe) = inputs.probe.filter(|p| p.enabled) {
        let (verdict, wait) = probing(&inputs, probe, &mut delivery).await;
        verdicts.push(verdict);
        waits.push(wait);
    } else {
        delivery.endpoint = None;
    }
    let test = test_delivery(&inputs, &mut delivery).await;
    let verdict = verdicts
        .into_iter()
        .reduce(classify::worse)
        .unwrap_or_else(|| {
            classify::not_reported(match inputs.flavor {
                Flavor::Cloud => "Bitbucket Cloud",
                _ => "Post Webhooks for Bitbucket",
            })
        });
    delivery.health = verdict.health;
    Assessment {
        delivery,
        verdict,
        next: waits.into_iter().min(),
        test,
    }
}

/// Data Center's statistics: this reconcile's reading, else the last one's verdict; and
/// the time to the next poll (on the place's slot).
fn statistics(inputs: &Inputs<'_>, delivery: &mut DeliveryStatus) -> (Verdict, Duration) {
    match (inputs.stats, inputs.schedule.last_poll(inputs.key)) {
        (Some(stats), _) => {
            record_statistics(delivery, stats);
            let verdict = classify::from_statistics(stats);
            let next = crate::slots::until_slot(inputs.poll_every, inputs.group);
            inputs.schedule.polled(inputs.key, &verdict, next);
            (verdict, next)
        }
        (None, Some((left, verdict))) => (verdict, left),
        // Came due between the listing and now: read at the next reconcile.
        (None, None) => (
            Verdict {
                health: delivery.health,
                delivering: None,
                reason: crate::api::Reason::StatisticsPending,
                message: "the delivery statistics are read with the repository's next listing"
                    .to_owned(),
            },
            Duration::from_secs(1),
        ),
    }
}

/// The endpoint probe when due (or the spec changed), else its last verdict; and the
/// time to the next.
async fn probing(
    inputs: &Inputs<'_>,
    probe: &ProbeSpec,
    delivery: &mut DeliveryStatus,
) -> (Verdict, Duration) {
    let every = probe
        .interval_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_PROBE_INTERVAL, Duration::from_secs);
    if let Some(last) = recent(&inputs.schedule.probes, inputs.key, every).filter(|_| !inputs.now) {
        return (last.1, last.0);
    }
    let (outcome, latency) = probe::run(&probe::Probe {
        url: inputs.url,
        secret: inputs.secret,
        skip_cert_verification: inputs.skip_cert_verification,
        allow_private_targets: inputs.allow_private_targets,
    })
    .await;
    let now = Timestamp::now();
    let verdict = classify::from_probe(&outcome, now);
    delivery.endpoint = Some(endpoint_status(&outcome, latency, &verdict, now));
    remember(&inputs.schedule.probes, inputs.key, &verdict);
    (verdict, every)
}

/// A test delivery, once per new value of the `test-requested` annotation: (whether it
/// was delivered, what to say).
async fn test_delivery(
    inputs: &Inputs<'_>,
    delivery: &mut DeliveryStatus,
) -> Option<(bool, String)> {
    let request = inputs.test_requested?;
    if delivery
        .last_test
        .as_ref()
        .is_some_and(|t| t.request == request)
    {
        return None;
    }
    let sent = inputs
        .backend
        .test_delivery(
            inputs.place,
            inputs.hook_id,
            inputs.url,
            inputs.skip_cert_verification,
        )
        .await;
    let (status_code, message, ok) = match sent {
        Ok(result) => {
            let ok = result.status.is_some_and(|s| (200..300).contains(&s));
            (result.status.map(i32::from), result.message, ok)
        }
        Err(e) => (None, format!("the test could not be sent: {e}"), false),
    };
    delivery.last_test = Some(TestDeliveryStatus {
        request: request.to_owned(),
        status_code,
        message: Some(message.clone()),
        time: Some(time(Timestamp::now())),
    });
    Some((ok, format!("test delivery {request}: {message}")))
}

/// Copies Data Center's counts and last outcomes into the status.
fn record_statistics(delivery: &mut DeliveryStatus, stats: &DeliveryStats) {
    let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
    delivery.successes = count(stats.successes);
    delivery.failures = count(stats.failures);
    delivery.errors = count(stats.errors);
    // Said only once there is something it frames: a hook that has delivered nothing reads
    // the same before its first listing (just created) and after.
    let delivered = stats.successes + stats.failures + stats.errors > 0
        || stats.last_success.is_some()
        || stats.last_failure.is_some()
        || stats.last_error.is_some();
    delivery.window = stats
        .window
        .filter(|_| delivered)
        .map(|w| format!("{}h", w.as_secs() / 3600));
    delivery.last_success_time = stats.last_success.as_ref().map(|i| time(i.at));
    let last_bad = [&stats.last_failure, &stats.last_error]
        .into_iter()
        .flatten()
        .max_by_key(|i| i.at);
    delivery.last_failure_time = last_bad.map(|i| time(i.at));
    delivery.last_error =
        last_bad.map(|i| format!("{} ({}): {}", i.outcome, i.event, i.description));
}

fn endpoint_status(
    outcome: &ProbeOutcome,
    latency: Option<Duration>,
    verdict: &Verdict,
    now: Timestamp,
) -> EndpointStatus {
    let (reachable, status_code, expires) = match outcome {
        ProbeOutcome::Answered {
            status,
            certificate_expires,
            ..
        } => (true, Some(i32::from(*status)), *certificate_expires),
        _ => (false, None, None),
    };
    EndpointStatus {
        reachable,
        message: Some(verdict.message.clone()),
        status_code,
        latency_ms: latency.map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX)),
        tls_expires_at: expires.map(time),
        checked_at: Some(time(now)),
    }
}
