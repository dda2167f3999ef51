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
use crate::bitbucket::{RepoRef, WebhookBackend};
use classify::{ProbeOutcome, Verdict};

/// The default time between probes.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// When each Webhook was last polled or probed, and what that said. In memory: after a
/// restart every Webhook is polled once right away.
#[derive(Default)]
pub struct Schedule {
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
    pub repo: &'a RepoRef,
    pub hook_id: &'a str,
    pub url: &'a str,
    pub secret: Option<&'a SecretString>,
    pub skip_cert_verification: bool,
    /// The Webhook's probe, else the connection's.
    pub probe: Option<&'a ProbeSpec>,
    pub allow_private_targets: bool,
    /// Poll now regardless of the schedule (the spec changed).
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
    let mut next: Option<Duration> = None;
    let mut soonest = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));

    if inputs.flavor == Flavor::DataCenter {
        match recent(&inputs.schedule.polls, inputs.key, inputs.poll_every).filter(|_| !inputs.now)
        {
            Some((left, verdict)) => {
                soonest(left);
                verdicts.push(verdict);
            }
            None => {
                let verdict = match inputs
                    .backend
                    .delivery_stats(inputs.repo, inputs.hook_id)
                    .await
                {
                    Ok(Some(stats)) => {
                        delivery.successes =
                            Some(i64::try_from(stats.successes).unwrap_or(i64::MAX));
                        delivery.failures = Some(i64::try_from(stats.failures).unwrap_or(i64::MAX));
                        delivery.errors = Some(i64::try_from(stats.errors).unwrap_or(i64::MAX));
                        delivery.window = stats.window.map(|w| format!("{}h", w.as_secs() / 3600));
                        delivery.last_success_time =
                            stats.last_success.as_ref().map(|i| time(i.at));
                        let last_bad = [&stats.last_failure, &stats.last_error]
                            .into_iter()
                            .flatten()
                            .max_by_key(|i| i.at);
                        delivery.last_failure_time = last_bad.map(|i| time(i.at));
                        delivery.last_error = last_bad
                            .map(|i| format!("{} ({}): {}", i.outcome, i.event, i.description));
                        classify::from_statistics(&stats)
                    }
                    Ok(None) => classify::not_reported("This backend"),
                    Err(e) => Verdict {
                        health: crate::api::DeliveryHealth::Unknown,
                        delivering: None,
                        reason: "StatisticsUnavailable",
                        message: format!("cannot read the delivery statistics: {e}"),
                    },
                };
                if verdict.reason != "StatisticsUnavailable" {
                    remember(&inputs.schedule.polls, inputs.key, &verdict);
                }
                soonest(inputs.poll_every);
                verdicts.push(verdict);
            }
        }
    }

    if let Some(probe) = inputs.probe.filter(|p| p.enabled) {
        let every = probe
            .interval_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_PROBE_INTERVAL, Duration::from_secs);
        match recent(&inputs.schedule.probes, inputs.key, every).filter(|_| !inputs.now) {
            Some((left, verdict)) => {
                soonest(left);
                verdicts.push(verdict);
            }
            None => {
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
                soonest(every);
                verdicts.push(verdict);
            }
        }
    } else {
        delivery.endpoint = None;
    }

    let mut test = None;
    if let Some(request) = inputs.test_requested
        && delivery
            .last_test
            .as_ref()
            .is_none_or(|t| t.request != request)
    {
        let (status_code, message, ok) = match inputs
            .backend
            .test_delivery(inputs.repo, inputs.hook_id)
            .await
        {
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
        test = Some((ok, format!("test delivery {request}: {message}")));
    }

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
        next,
        test,
    }
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
