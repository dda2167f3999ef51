//! One request budget per connection: at most `requestsPerHour` Bitbucket requests in any
//! rolling hour, shared by every Webhook of the connection, retries included.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A token bucket sized so that no rolling hour exceeds the budget.
pub struct Budget {
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>,
    per_hour: u32,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({}/h)", self.per_hour)
    }
}

impl Budget {
    /// GCRA allows `burst` at once plus one cell per period; over any hour that is
    /// `burst + 3600s / period`, so the period is chosen to make the sum `per_hour`.
    pub fn per_hour(per_hour: u32) -> Budget {
        let per_hour = per_hour.max(1);
        let burst = (per_hour / 10).max(1);
        let refills = per_hour.saturating_sub(burst).max(1);
        let period = Duration::from_secs_f64(3600.0 / f64::from(refills))
            // With one request per hour the bucket must not refill within the hour.
            + if per_hour == 1 { Duration::from_secs(1) } else { Duration::ZERO };
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Budget {
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            per_hour,
        }
    }

    /// Takes one request from the budget and says how many more could go at once, or
    /// says how long until one is available.
    pub fn try_acquire(&self) -> Result<u32, Duration> {
        self.limiter
            .check()
            .map(|snapshot| snapshot.remaining_burst_capacity())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The configured requests per hour.
    pub fn limit(&self) -> u32 {
        self.per_hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_a_tenth_and_then_the_budget_says_how_long_to_wait() {
        let budget = Budget::per_hour(100);
        for _ in 0..10 {
            assert!(budget.try_acquire().is_ok());
        }
        let wait = budget.try_acquire().expect_err("burst spent");
        // 90 refills per hour: one every 40 seconds.
        assert!(
            wait > Duration::from_secs(30) && wait <= Duration::from_secs(40),
            "{wait:?}"
        );
    }

    #[test]
    fn tiny_budgets_still_work() {
        let budget = Budget::per_hour(1);
        assert!(budget.try_acquire().is_ok());
        assert!(budget.try_acquire().is_err());
    }
}
