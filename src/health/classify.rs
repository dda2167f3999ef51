//! From what Bitbucket reports and what the probe saw to a health verdict. Pure.
//!
//! Thresholds (also in the README):
//! - Data Center statistics: the most recent delivery decides. A failure or error last:
//!   **Failing**. A success last: **Healthy**, or **Degraded** when half or more of the
//!   deliveries in Bitbucket's window failed. None at all: **Unknown**.
//! - Probe: no answer, or a certificate that fails verification while
//!   `skipCertVerification` is false: **Failing**. A 5xx answer: **Failing**; a 4xx
//!   answer: **Degraded** (the endpoint is up but refuses a signed ping). A certificate
//!   expiring within 14 days: **Degraded**. Otherwise **Healthy**.
//! - Both present: the worse verdict wins.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{DeliveryHealth, Reason};
use crate::bitbucket::{DeliveryStats, Invocation};

/// A certificate expiring sooner than this degrades health.
pub const CERTIFICATE_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A verdict with the `Delivering` condition it implies.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub health: DeliveryHealth,
    /// True (delivering), False (failing) or Unknown.
    pub delivering: Option<bool>,
    pub reason: Reason,
    pub message: String,
}

fn severity(h: DeliveryHealth) -> u8 {
    match h {
        DeliveryHealth::Unknown => 0,
        DeliveryHealth::Healthy => 1,
        DeliveryHealth::Degraded => 2,
        DeliveryHealth::Failing => 3,
    }
}

/// The worse of two verdicts (the first on a tie).
pub fn worse(a: Verdict, b: Verdict) -> Verdict {
    if severity(b.health) > severity(a.health) {
        b
    } else {
        a
    }
}

fn latest(stats: &DeliveryStats) -> Option<&Invocation> {
    [&stats.last_success, &stats.last_failure, &stats.last_error]
        .into_iter()
        .flatten()
        .max_by_key(|i| i.at)
}

/// The verdict from Data Center's statistics.
pub fn from_statistics(stats: &DeliveryStats) -> Verdict {
    let total = stats.successes + stats.failures + stats.errors;
    let Some(last) = latest(stats) else {
        return Verdict {
            health: DeliveryHealth::Unknown,
            delivering: None,
            reason: Reason::NoDeliveries,
            message: "Bitbucket has not delivered anything to this hook yet".to_owned(),
        };
    };
    let failed = stats.failures + stats.errors;
    if last.outcome != "SUCCESS" {
        let what = if last.outcome == "ERROR" {
            "got no answer"
        } else {
            "was refused"
        };
        return Verdict {
            health: DeliveryHealth::Failing,
            delivering: Some(false),
            reason: Reason::DeliveriesFailing,
            message: format!(
                "the last delivery ({} at {}) {what}: {}; {failed} of {total} failed in Bitbucket's window",
                last.event, last.at, last.description
            ),
        };
    }
    if total > 0 && failed * 2 >= total {
        return Verdict {
            health: DeliveryHealth::Degraded,
            delivering: Some(true),
            reason: Reason::DeliveriesDegraded,
            message: format!(
                "the last delivery succeeded, but {failed} of {total} in Bitbucket's window failed"
            ),
        };
    }
    Verdict {
        health: DeliveryHealth::Healthy,
        delivering: Some(true),
        reason: Reason::DeliveriesSucceed,
        message: format!(
            "the last delivery ({} at {}) succeeded; {failed} of {total} failed in Bitbucket's window",
            last.event, last.at
        ),
    }
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeOutcome {
    /// Not sent: the target is an address the operator may not reach.
    Refused(String),
    /// No HTTP answer (DNS, connection, timeout).
    Unreachable(String),
    /// The TLS certificate failed verification.
    CertificateRejected(String),
    Answered {
        status: u16,
        latency: Duration,
        certificate_expires: Option<Timestamp>,
    },
}

/// The verdict from a probe.
pub fn from_probe(outcome: &ProbeOutcome, now: Timestamp) -> Verdict {
    match outcome {
        ProbeOutcome::Refused(why) => Verdict {
            health: DeliveryHealth::Unknown,
            delivering: None,
            reason: Reason::ProbeRefused,
            message: why.clone(),
        },
        ProbeOutcome::Unreachable(why) => Verdict {
            health: DeliveryHealth::Failing,
            delivering: Some(false),
            reason: Reason::EndpointUnreachable,
            message: format!("the endpoint did not answer the probe: {why}"),
        },
        ProbeOutcome::CertificateRejected(why) => Verdict {
            health: DeliveryHealth::Failing,
            delivering: Some(false),
            reason: Reason::CertificateRejected,
            message: format!(
                "the endpoint's TLS certificate fails verification (Bitbucket refuses it unless skipCertVerification is true): {why}"
            ),
        },
        ProbeOutcome::Answered {
            status,
            certificate_expires,
            ..
        } => {
            if let Some(expires) = certificate_expires {
                let left = expires.duration_since(now);
                if left < jiff::SignedDuration::try_from(CERTIFICATE_WARNING).unwrap_or_default() {
                    let days = left.as_secs() / 86_400;
                    return Verdict {
                        health: if left.is_negative() {
                            DeliveryHealth::Failing
                        } else {
                            DeliveryHealth::Degraded
                        },
                        delivering: Some(!left.is_negative()),
                        reason: Reason::CertificateExpiring,
                        message: format!(
                            "the endpoint's TLS certificate expires at {expires} (in {days} days)"
                        ),
                    };
                }
            }
            match status {
                500..=599 => Verdict {
                    health: DeliveryHealth::Failing,
                    delivering: Some(false),
                    reason: Reason::EndpointFailing,
                    message: format!("the endpoint answered the probe with {status}"),
                },
                400..=499 => Verdict {
                    health: DeliveryHealth::Degraded,
                    delivering: Some(true),
                    reason: Reason::EndpointRefusesPing,
                    message: format!(
                        "the endpoint is up but answered the signed ping with {status}"
                    ),
                },
                _ => Verdict {
                    health: DeliveryHealth::Healthy,
                    delivering: Some(true),
                    reason: Reason::EndpointHealthy,
                    message: format!("the endpoint answered the probe with {status}"),
                },
            }
        }
    }
}

/// No statistics and no probe.
pub fn not_reported(backend: &str) -> Verdict {
    Verdict {
        health: DeliveryHealth::Unknown,
        delivering: None,
        reason: Reason::NotReportedByBitbucket,
        message: format!(
            "{backend} has no public delivery history; turn on the endpoint probe (spec.probe) to check the target"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn invocation(outcome: &str, time: &str) -> Option<Invocation> {
        Some(Invocation {
            at: at(time),
            event: "repo:refs_changed".into(),
            outcome: outcome.into(),
            description: "500".into(),
        })
    }

    #[test]
    fn the_most_recent_delivery_decides() {
        let mut stats = DeliveryStats {
            successes: 9,
            failures: 1,
            last_success: invocation("SUCCESS", "2026-01-01T10:00:00Z"),
            last_failure: invocation("FAILURE", "2026-01-01T11:00:00Z"),
            ..Default::default()
        };
        assert_eq!(from_statistics(&stats).health, DeliveryHealth::Failing);
        stats.last_success = invocation("SUCCESS", "2026-01-01T12:00:00Z");
        let v = from_statistics(&stats);
        assert_eq!(
            (v.health, v.reason),
            (DeliveryHealth::Healthy, Reason::DeliveriesSucceed)
        );
        stats.failures = 9;
        assert_eq!(
            from_statistics(&stats).health,
            DeliveryHealth::Degraded,
            "half or more failed"
        );
        assert_eq!(
            from_statistics(&DeliveryStats::default()).health,
            DeliveryHealth::Unknown
        );
    }

    #[test]
    fn probe_verdicts() {
        let now = at("2026-11-23T00:00:00Z");
        let answered = |status, expires: Option<&str>| ProbeOutcome::Answered {
            status,
            latency: Duration::from_millis(5),
            certificate_expires: expires.map(at),
        };
        assert_eq!(
            from_probe(&answered(200, Some("2027-01-01T00:00:00Z")), now).health,
            DeliveryHealth::Healthy
        );
        let soon = from_probe(&answered(200, Some("2026-11-26T00:00:00Z")), now);
        assert_eq!(
            (soon.health, soon.reason),
            (DeliveryHealth::Degraded, Reason::CertificateExpiring)
        );
        assert!(
            soon.message.contains("2026-11-26") && soon.message.contains("in 3 days"),
            "{}",
            soon.message
        );
        assert_eq!(
            from_probe(&answered(503, None), now).health,
            DeliveryHealth::Failing
        );
        assert_eq!(
            from_probe(&answered(404, None), now).health,
            DeliveryHealth::Degraded
        );
        assert_eq!(
            from_probe(&ProbeOutcome::Unreachable("refused".into()), now).delivering,
            Some(false)
        );
        assert_eq!(
            from_probe(
                &ProbeOutcome::CertificateRejected("self-signed".into()),
                now
            )
            .reason,
            Reason::CertificateRejected
        );
        assert_eq!(
            from_probe(&ProbeOutcome::Refused("loopback".into()), now).health,
            DeliveryHealth::Unknown
        );
    }

    #[test]
    fn the_worse_verdict_wins() {
        let now = at("2026-11-23T00:00:00Z");
        let healthy = from_probe(
            &ProbeOutcome::Answered {
                status: 200,
                latency: Duration::ZERO,
                certificate_expires: None,
            },
            now,
        );
        let failing = from_probe(&ProbeOutcome::Unreachable("x".into()), now);
        assert_eq!(
            worse(healthy.clone(), failing.clone()).health,
            DeliveryHealth::Failing
        );
        assert_eq!(worse(failing, healthy).health, DeliveryHealth::Failing);
    }
}
