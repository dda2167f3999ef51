//! Changed Webhooks before periodic work, and free restarts.
//!
//! A reconcile of a Webhook whose status already answers its spec (the generation seen,
//! Synced, no create in flight, no test asked for) is periodic work: a resync slot, a
//! health poll, a watch event that changed nothing it reads. Periodic work takes one of a
//! few process-wide permits or steps back for a moment, so a burst of it never fills
//! every reconcile slot while a new or edited Webhook waits. And the first time a process
//! sees a Webhook (a restart, a leader handover) a status that is current and younger than
//! the resync period is trusted until the repository's slot: no Bitbucket call.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{PENDING_CREATE_ANNOTATION, TEST_REQUESTED_ANNOTATION, Webhook};
use crate::reconcile::conditions;

/// Whether the Webhook's status answers its current spec.
pub fn current(w: &Webhook) -> bool {
    let Some(status) = &w.status else {
        return false;
    };
    let test_answered = match w.annotations().get(TEST_REQUESTED_ANNOTATION) {
        None => true,
        Some(request) => status
            .delivery
            .as_ref()
            .and_then(|d| d.last_test.as_ref())
            .is_some_and(|t| &t.request == request),
    };
    status.observed_generation == w.metadata.generation
        && status.webhook_id.is_some()
        && !w.annotations().contains_key(PENDING_CREATE_ANNOTATION)
        && test_answered
        && conditions::holds(&status.conditions, conditions::SYNCED)
}

/// Whether a current status was written within `period` before `now`.
pub fn fresh(w: &Webhook, period: Duration, now: Timestamp) -> bool {
    let Some(synced) = w.status.as_ref().and_then(|s| s.last_sync_time.as_ref()) else {
        return false;
    };
    let age = now.duration_since(synced.0);
    !age.is_negative() && age.unsigned_abs() < period
}

/// The trust a Webhook's status has: `seen` is what the process recorded before (None:
/// never seen it), the answer what it records now (Some: trusted until that instant).
/// The first sight of a current, fresh status trusts it until the slot; later reconciles
/// keep that while the status stays current, ending a second early so that the slot's
/// own reconcile (requeued for that instant) never finds it still trusted.
pub fn trust(
    seen: Option<Option<Instant>>,
    current: bool,
    fresh: bool,
    until_slot: Duration,
    now: Instant,
) -> Option<Instant> {
    match seen {
        None => (current && fresh).then(|| now + until_slot),
        Some(Some(until)) if current && now + Duration::from_secs(1) < until => Some(until),
        Some(_) => None,
    }
}

/// How long periodic work steps back when every periodic permit is taken: a second or
/// two, spread so the waiting ones do not all come back at once.
pub fn step_back(key: &str) -> Duration {
    let spread = key
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Duration::from_millis(1000 + spread % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TestDeliveryStatus, WebhookStatus};
    use crate::reconcile::conditions::{Outcome, Status};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn webhook(status: Option<WebhookStatus>, annotations: &[(&str, &str)]) -> Webhook {
        let mut w = super::super::fixture::webhook(serde_json::json!({}), annotations);
        w.metadata.generation = Some(2);
        w.status = status;
        w
    }

    fn status(generation: i64, synced: Status, test: Option<&str>) -> WebhookStatus {
        let now = Time(at("2026-11-26T12:00:00Z"));
        let outcome = Outcome::new(synced, crate::api::Reason::InSync, "m");
        WebhookStatus {
            observed_generation: Some(generation),
            webhook_id: Some("7".into()),
            last_sync_time: Some(now.clone()),
            conditions: vec![conditions::condition(
                &[],
                conditions::SYNCED,
                &outcome,
                Some(generation),
                &now,
            )],
            delivery: test.map(|t| crate::api::DeliveryStatus {
                last_test: Some(TestDeliveryStatus {
                    request: t.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_status_that_answers_the_spec_is_current() {
        let pending = [(PENDING_CREATE_ANNOTATION, "https://ci.example.com/hook")];
        let test = [(TEST_REQUESTED_ANNOTATION, "2")];
        let table = [
            (webhook(None, &[]), false),
            (webhook(Some(status(2, Status::True, None)), &[]), true),
            (webhook(Some(status(1, Status::True, None)), &[]), false),
            (webhook(Some(status(2, Status::False, None)), &[]), false),
            (
                webhook(Some(status(2, Status::True, None)), &pending),
                false,
            ),
            (
                webhook(Some(status(2, Status::True, Some("1"))), &test),
                false,
            ),
            (
                webhook(Some(status(2, Status::True, Some("2"))), &test),
                true,
            ),
        ];
        for (i, (w, expected)) in table.into_iter().enumerate() {
            assert_eq!(current(&w), expected, "case {i}");
        }
    }

    #[test]
    fn a_status_is_fresh_within_the_period() {
        let w = webhook(Some(status(2, Status::True, None)), &[]);
        let period = Duration::from_secs(600);
        assert!(fresh(&w, period, at("2026-11-26T12:09:00Z")));
        assert!(!fresh(&w, period, at("2026-11-26T12:11:00Z")));
        assert!(
            !fresh(&w, period, at("2026-11-26T11:59:00Z")),
            "from the future"
        );
        assert!(!fresh(
            &webhook(None, &[]),
            period,
            at("2026-11-26T12:01:00Z")
        ));
    }

    #[test]
    fn trust_lasts_from_the_first_sight_until_the_slot() {
        let t0 = Instant::now();
        let slot = Duration::from_secs(60);
        let until = t0 + slot;
        let at = |s: u64| t0 + Duration::from_secs(s);
        let table = [
            // (recorded, current, fresh, now, expected)
            (None, true, true, t0, Some(until)),
            (None, true, false, t0, None),
            (None, false, true, t0, None),
            (Some(Some(until)), true, true, at(30), Some(until)),
            (Some(Some(until)), true, false, at(30), Some(until)),
            (Some(Some(until)), false, true, at(30), None),
            (
                Some(Some(until)),
                true,
                true,
                at(59) + Duration::from_millis(500),
                None,
            ),
            (Some(Some(until)), true, true, at(61), None),
            (Some(None), true, true, at(30), None),
        ];
        for (i, (recorded, current, fresh, now, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                trust(recorded, current, fresh, slot, now),
                expected,
                "case {i}"
            );
        }
    }

    #[test]
    fn steps_back_between_one_and_two_seconds() {
        for key in ["a/b", "team/x", ""] {
            let d = step_back(key);
            assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(2));
        }
    }
}
