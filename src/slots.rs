//! The clock and the slots: when to compare a repository's hooks with Bitbucket again.
//! Every Webhook of one repository resyncs (and polls health) in the same slot, so one
//! list serves all of them; slots of different repositories are spread over the period
//! (a phase derived from the group). Below the reconcilers and health, which both use it.

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time since the Unix epoch: slots are instants of the wall clock, so every replica
/// and every restart finds the same ones.
pub fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Until the next slot of `group` (of period `period`), from now.
pub fn until_slot(period: Duration, group: &impl Hash) -> Duration {
    until_next_slot(now_since_epoch(), period, group)
}

/// How long ago the current slot of `group` began.
pub fn since_slot(period: Duration, group: &impl Hash) -> Duration {
    period.saturating_sub(until_slot(period, group))
}

/// Time until the next slot of `group` (a [`crate::identity::ConnectionPlace`], or any
/// key), given the time since the Unix epoch. DefaultHasher's keys are fixed, so the
/// phase is the same in every process.
pub fn until_next_slot(now: Duration, period: Duration, group: &impl Hash) -> Duration {
    let period_ms = period.as_millis().max(1);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    group.hash(&mut hasher);
    let phase = u128::from(hasher.finish()) % period_ms;
    let now_ms = now.as_millis();
    let since_phase = (now_ms + period_ms - phase) % period_ms;
    let wait = period_ms - since_phase;
    Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(600);

    #[test]
    fn webhooks_of_one_repository_share_a_slot() {
        let a = Duration::from_secs(1_000_000);
        let b = a + Duration::from_secs(123);
        let slot_a = a + until_next_slot(a, PERIOD, &"conn/acme/api");
        let slot_b = b + until_next_slot(b, PERIOD, &"conn/acme/api");
        assert!(
            slot_a == slot_b || slot_b == slot_a + PERIOD,
            "{slot_a:?} {slot_b:?}"
        );
    }

    #[test]
    fn the_wait_is_within_one_period_and_never_zero() {
        for s in [0u64, 1, 599, 600, 601, 12345] {
            let wait = until_next_slot(Duration::from_secs(s), PERIOD, &"g");
            assert!(wait > Duration::ZERO && wait <= PERIOD, "{s}: {wait:?}");
        }
    }

    #[test]
    fn repositories_are_spread_over_the_period() {
        let now = Duration::from_secs(1_000_000);
        let waits: std::collections::BTreeSet<u64> = (0..20)
            .map(|i| until_next_slot(now, PERIOD, &format!("conn/acme/repo-{i}")).as_secs() / 60)
            .collect();
        assert!(waits.len() >= 5, "{waits:?}");
    }
}
