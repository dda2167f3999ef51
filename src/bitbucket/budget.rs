//! One request budget per credential on a server (as Bitbucket counts: a user, or an
//! access token): at most its allowance of Bitbucket requests in any rolling hour, shared
//! by every connection and Webhook using it, retries included.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A token bucket sized so that no rolling hour exceeds the budget, and a pause after
/// Bitbucket itself said "too many" (429): until it ends no request goes out.
pub struct Budget {
    /// The bucket and the requests per hour it allows; replaced when the allowance drops
    /// (a connection sharing the credential asks for less, or Bitbucket reports less).
    limiter: Mutex<(u32, Arc<Limiter>)>,
    /// What Bitbucket reported of its own limits, per resource group (Cloud's
    /// `X-RateLimit-*` headers on access-token requests).
    reported: Mutex<std::collections::BTreeMap<String, Reported>>,
    /// Periodic work's own bucket at half the allowance: drift checks and health polls
    /// never take more than half the budget, so the rest stays free for changes.
    periodic: Mutex<Arc<Limiter>>,
    /// The requests per hour the connections ask for (the smallest of them).
    asked: std::sync::atomic::AtomicU32,
    pause: Mutex<Pause>,
    /// Called when a pause starts (the connection reconciler then shows it).
    on_pause: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Bitbucket failing (5xx, no answer, 429) since the last answer, and the hooks told
    /// when it starts and when it answers again.
    outage: Mutex<Outage>,
    on_outage: Mutex<Option<OutageHook>>,
    /// Requests taken, per minute and purpose, over the last hour (at most 60 entries,
    /// whatever the budget).
    spent: Mutex<std::collections::VecDeque<(u64, [u64; Purpose::ALL.len()])>>,
    /// Every request taken since the budget was made.
    taken: std::sync::atomic::AtomicU64,
    /// The requests waiting for their turn.
    queue: super::queue::Queue,
    /// When Bitbucket last accepted a request (2xx): the credential works.
    last_success: Mutex<Option<(Instant, jiff::Timestamp)>>,
    /// Called when requests start to queue (the connection reconciler then shows it), at
    /// most every `QUEUE_TOLD_EVERY`, and when it was last called.
    on_queue: Mutex<(Option<Tell>, Option<Instant>)>,
}

type Tell = Arc<dyn Fn() + Send + Sync>;

/// How often the start of a queue is told at most.
const QUEUE_TOLD_EVERY: Duration = Duration::from_secs(30);

/// What a request was for, as the connection's status and metrics tell the budget's use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// Creates, updates, deletes.
    Writes,
    /// A place's hooks (with Data Center's statistics).
    Listings,
    /// Data Center statistics and test deliveries.
    Health,
    /// The credential check and event catalogues.
    Verification,
    /// Repository and project listings (WebhookSet discovery, `export`, `inventory`).
    Discovery,
}

impl Purpose {
    pub const ALL: [Purpose; 5] = [
        Purpose::Writes,
        Purpose::Listings,
        Purpose::Health,
        Purpose::Verification,
        Purpose::Discovery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Purpose::Writes => "writes",
            Purpose::Listings => "listings",
            Purpose::Health => "health",
            Purpose::Verification => "verification",
            Purpose::Discovery => "discovery",
        }
    }

    /// From the request itself: each call the clients make is told apart by its method and
    /// path (Cloud 2.0, Data Center REST, Post Webhooks v1 and v2).
    pub fn of(method: &reqwest::Method, path: &str) -> Purpose {
        let path = path.trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let last = segments.last().copied().unwrap_or_default();
        let before_last = segments.len().checked_sub(2).map_or("", |i| segments[i]);
        if last == "test" || last == "latest" || path.contains("/statistics") {
            return Purpose::Health;
        }
        if method != reqwest::Method::GET {
            return Purpose::Writes;
        }
        if last == "user"
            || last == "application-properties"
            || last == "event-types"
            || path.contains("/hook_events")
        {
            return Purpose::Verification;
        }
        if last == "repos" || last == "projects" || before_last == "repositories" {
            return Purpose::Discovery;
        }
        Purpose::Listings
    }
}

fn minute_now() -> u64 {
    jiff::Timestamp::now().as_second().max(0) as u64 / 60
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One resource group's limit as Bitbucket reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    /// Cloud's `X-RateLimit-Resource` ("api" for the scaled group); "" when not named.
    pub resource: String,
    /// `X-RateLimit-Limit`: requests per hour Bitbucket allows this credential.
    pub limit: u32,
    /// `X-RateLimit-NearLimit`: less than a fifth of the allowance remains.
    pub near_limit: bool,
    pub at: jiff::Timestamp,
}

/// Told when Bitbucket starts failing and when it answers again.
pub type OutageHook = Arc<dyn Fn(Health) + Send + Sync>;

/// Whether Bitbucket answers, as this credential's requests found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Requests failed in a row (5xx, no answer, 429): `FAILING_AFTER` of them.
    Failing,
    /// It answered again after failing.
    Answering,
}

/// Consecutive failed requests that make Bitbucket "failing" for the connection's
/// status (one failure is noise; three in a row across the credential's Webhooks is not).
const FAILING_AFTER: u32 = 3;

#[derive(Default)]
struct Outage {
    /// Failed requests since the last answer.
    failures: u32,
    /// Since when, once `FAILING_AFTER` was reached.
    since: Option<jiff::Timestamp>,
}

#[derive(Default)]
struct Pause {
    until: Option<(Instant, jiff::Timestamp)>,
    /// 429s since the last success: each doubles the next pause.
    strikes: u32,
}

/// The longest pause: Cloud's window is a rolling hour, so after one the budget has room.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({}/h)", self.limit())
    }
}

/// GCRA allows `burst` at once plus one cell per period; over any hour that is
/// `burst + 3600s / period`, so the period is chosen to make the sum `per_hour`.
fn limiter(per_hour: u32) -> Limiter {
    let burst = (per_hour / 10).max(1);
    let refills = per_hour.saturating_sub(burst).max(1);
    let period = Duration::from_secs_f64(3600.0 / f64::from(refills))
        // With one request per hour the bucket must not refill within the hour.
        + if per_hour == 1 { Duration::from_secs(1) } else { Duration::ZERO };
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

/// One request from `limiter`: how many more could go at once, or how long until one can.
fn take(limiter: &Limiter) -> Result<u32, Duration> {
    limiter
        .check()
        .map(|snapshot| snapshot.remaining_burst_capacity())
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// The part of an allowance periodic work may take: half.
pub fn periodic_share(per_hour: u32) -> u32 {
    (per_hour / 2).max(1)
}

impl Budget {
    pub fn per_hour(per_hour: u32) -> Budget {
        let per_hour = per_hour.max(1);
        Budget {
            limiter: Mutex::new((per_hour, Arc::new(limiter(per_hour)))),
            periodic: Mutex::new(Arc::new(limiter(periodic_share(per_hour)))),
            reported: Mutex::default(),
            asked: std::sync::atomic::AtomicU32::new(per_hour),
            pause: Mutex::default(),
            on_pause: Mutex::default(),
            outage: Mutex::default(),
            on_outage: Mutex::default(),
            spent: Mutex::default(),
            taken: std::sync::atomic::AtomicU64::new(0),
            queue: super::queue::Queue::default(),
            last_success: Mutex::default(),
            on_queue: Mutex::default(),
        }
    }

    /// What to call when requests start to wait in the queue.
    pub fn set_on_queue(&self, hook: Tell) {
        self.on_queue.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(hook);
    }

    /// The first in line found the bucket empty: tell, unless told lately.
    fn queue_started(&self) {
        let hook = {
            let mut on_queue = self.on_queue.lock().unwrap_or_else(|p| p.into_inner());
            if on_queue.1.is_some_and(|at| at.elapsed() < QUEUE_TOLD_EVERY) {
                return;
            }
            on_queue.1 = Some(Instant::now());
            on_queue.0.clone()
        };
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Requests waiting for their turn now.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes one request from the budget in the queue's order (the running work's
    /// [`Ticket`](super::queue::Ticket)), waiting for its turn unless that would take
    /// longer than `patience` (zero: go now or not at all): then says how long it would
    /// (the caller comes back then, rather than holding a reconcile that long). Periodic
    /// work (a `Drift` or `Health` ticket) also takes from its share, half the budget, and
    /// never waits for it.
    pub async fn acquire(&self, patience: Duration) -> Result<u32, Duration> {
        let ticket = super::queue::Ticket::current();
        let periodic = ticket.priority != super::queue::Priority::Change;
        let place = self.queue.join(ticket);
        // Periodic work takes from its share once, first in line, and never waits for it.
        let mut share_due = periodic;
        let mut told = false;
        loop {
            let moved = self.queue.moved();
            tokio::pin!(moved);
            moved.as_mut().enable();
            match self.queue.ahead(&place) {
                (0, _)
                    if std::mem::take(&mut share_due)
                        && let Err(wait) = self.periodic_turn() =>
                {
                    return Err(wait);
                }
                (0, _) => match self.try_acquire() {
                    Ok(remaining) => {
                        place.granted();
                        return Ok(remaining);
                    }
                    Err(wait) if wait > patience => return Err(wait),
                    Err(wait) => {
                        if !std::mem::replace(&mut told, true) {
                            self.queue_started();
                        }
                        self.queue.refills_at(Instant::now() + wait);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = moved => {}
                        }
                    }
                },
                (ahead, refill) => {
                    // Once the bucket is empty, each one ahead takes a refill. While
                    // requests go without waiting nobody knows how many more may: only the
                    // impatient give up then.
                    let each = Duration::from_secs_f64(3600.0 / f64::from(self.limit()));
                    let estimate = refill.map_or(Duration::ZERO, |r| {
                        r.saturating_duration_since(Instant::now())
                    }) + each
                        .saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX));
                    if (refill.is_some() || patience.is_zero()) && estimate > patience {
                        return Err(estimate);
                    }
                    moved.await;
                }
            }
        }
    }

    /// Counts one request taken from the budget for `purpose`.
    pub fn spend(&self, purpose: Purpose) {
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let minute = minute_now();
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        while spent.front().is_some_and(|(m, _)| *m + 60 <= minute) {
            spent.pop_front();
        }
        if spent.back().is_none_or(|(m, _)| *m != minute) {
            spent.push_back((minute, [0; Purpose::ALL.len()]));
        }
        if let Some((_, counts)) = spent.back_mut() {
            counts[purpose as usize] += 1;
        }
    }

    /// Requests taken since the budget was made.
    pub fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests taken over the last hour (by whole minutes), by purpose.
    pub fn spent_last_hour(&self) -> Vec<(Purpose, u64)> {
        let minute = minute_now();
        let spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        Purpose::ALL
            .iter()
            .map(|p| {
                let n = spent
                    .iter()
                    .filter(|(m, _)| *m + 60 > minute)
                    .map(|(_, counts)| counts[*p as usize])
                    .sum();
                (*p, n)
            })
            .collect()
    }

    /// Takes one request from the budget and says how many more could go at once, or
    /// says how long until one is available (the end of a pause, or a refill).
    pub fn try_acquire(&self) -> Result<u32, Duration> {
        if let Some(until) = self.paused_until() {
            return Err(until.0.saturating_duration_since(Instant::now()));
        }
        let limiter = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        take(&limiter)
    }

    /// Takes one request from periodic work's share, or says how long until one is left.
    fn periodic_turn(&self) -> Result<(), Duration> {
        let periodic = self
            .periodic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        take(&periodic).map(drop)
    }

    /// The requests per hour this budget allows.
    pub fn limit(&self) -> u32 {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Allows `asked` requests per hour, or less where Bitbucket reported less: the
    /// bucket is rebuilt (starting with its burst) only when that changes. One credential
    /// has one allowance at Bitbucket, so the registry asks for the smallest `rateLimit`
    /// among the connections using it.
    pub fn set_allowance(&self, asked: u32) {
        let asked = asked.max(1);
        self.asked
            .store(asked, std::sync::atomic::Ordering::Relaxed);
        self.apply_allowance();
    }

    fn apply_allowance(&self) {
        let asked = self.asked.load(std::sync::atomic::Ordering::Relaxed);
        let reported = self
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| r.limit)
            .min();
        let per_hour = reported.map_or(asked, |r| r.min(asked)).max(1);
        let mut current = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if per_hour != current.0 {
            *current = (per_hour, Arc::new(limiter(per_hour)));
            *self.periodic.lock().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(limiter(periodic_share(per_hour)));
        }
    }

    /// Bitbucket reported a limit for a resource group (Cloud's `X-RateLimit-*`
    /// headers): kept for the connection's status, and the budget allows no more than
    /// the smallest reported.
    pub fn reported_limit(&self, resource: Option<&str>, limit: u32, near_limit: bool) {
        let resource = resource.unwrap_or_default().to_owned();
        let changed = {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            let changed = reported.get(&resource).is_none_or(|r| r.limit != limit);
            reported.insert(
                resource.clone(),
                Reported {
                    resource,
                    limit,
                    near_limit,
                    at: jiff::Timestamp::now(),
                },
            );
            changed
        };
        if changed {
            self.apply_allowance();
        }
    }

    /// What Bitbucket last reported, per resource group.
    pub fn reported(&self) -> Vec<Reported> {
        self.reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn pause(&self) -> std::sync::MutexGuard<'_, Pause> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bitbucket answered 429: pause every request for `retry_after` if it said, else for
    /// `first` doubled per 429 since the last success (at most an hour). Returns the pause.
    pub fn rate_limited(&self, retry_after: Option<Duration>, first: Duration) -> Duration {
        let wait = {
            let mut pause = self.pause();
            let wait = retry_after.unwrap_or_else(|| {
                first
                    .saturating_mul(2u32.saturating_pow(pause.strikes))
                    .min(MAX_PAUSE)
            });
            pause.strikes = pause.strikes.saturating_add(1);
            let until = Instant::now() + wait;
            let at = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                .unwrap_or_else(|_| jiff::Timestamp::now());
            if pause.until.is_none_or(|(u, _)| u < until) {
                pause.until = Some((until, at));
            }
            wait
        };
        let hook = self
            .on_pause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
        wait
    }

    /// A request succeeded: the next 429 starts from the first pause again.
    pub fn succeeded(&self) {
        *self.last_success.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), jiff::Timestamp::now()));
        let mut pause = self.pause();
        if pause.strikes > 0 && pause.until.is_none_or(|(u, _)| u <= Instant::now()) {
            pause.strikes = 0;
        }
    }

    /// When Bitbucket last accepted a request of this credential.
    pub fn last_success(&self) -> Option<(Instant, jiff::Timestamp)> {
        *self.last_success.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When requests resume, while a pause lasts.
    pub fn paused_until(&self) -> Option<(Instant, jiff::Timestamp)> {
        let mut pause = self.pause();
        match pause.until {
            Some((until, _)) if until <= Instant::now() => {
                pause.until = None;
                None
            }
            other => other,
        }
    }

    /// What to call when a pause starts.
    pub fn set_on_pause(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *self.on_pause.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// What to call when Bitbucket starts failing and when it answers again after
    /// failing (any failure: the Webhooks waiting on it are retried then).
    pub fn set_on_outage(&self, hook: OutageHook) {
        *self.on_outage.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// A request found Bitbucket failing: 5xx, no answer, or 429.
    pub fn failed(&self) {
        let started = {
            let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
            outage.failures = outage.failures.saturating_add(1);
            let starts = outage.failures == FAILING_AFTER;
            if starts {
                outage.since = Some(jiff::Timestamp::now());
            }
            starts
        };
        if started {
            self.tell(Health::Failing);
        }
    }

    /// Bitbucket answered (anything but 5xx or 429): after failures, it is back.
    pub fn answered(&self) {
        let was_failing = {
            let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
            let failed = outage.failures > 0;
            *outage = Outage::default();
            failed
        };
        if was_failing {
            self.tell(Health::Answering);
        }
    }

    /// Whether the last request found Bitbucket failing (no answer since).
    pub fn failing(&self) -> bool {
        self.outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failures
            > 0
    }

    /// Since when Bitbucket has been failing, while it is.
    pub fn failing_since(&self) -> Option<jiff::Timestamp> {
        self.outage.lock().unwrap_or_else(|p| p.into_inner()).since
    }

    fn tell(&self, health: Health) {
        let hook = self
            .on_outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(health);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_of_the_clients_has_its_purpose() {
        let table = "\
            GET /2.0/repositories/acme/api/hooks listings
            GET /2.0/workspaces/acme/hooks listings
            POST /2.0/repositories/acme/api/hooks writes
            PUT /2.0/repositories/acme/api/hooks/{1} writes
            DELETE /2.0/workspaces/acme/hooks/{1} writes
            GET /2.0/user verification
            GET /2.0/hook_events/repository verification
            GET /2.0/repositories/acme discovery
            GET /rest/api/latest/projects/PLAT/repos/api/webhooks listings
            GET /rest/api/latest/projects/PLAT/webhooks/4/statistics/summary health
            GET /rest/api/latest/projects/PLAT/repos/api/webhooks/4/latest health
            POST /rest/api/latest/projects/PLAT/repos/api/webhooks/test health
            GET /rest/api/latest/application-properties verification
            GET /rest/api/latest/projects/PLAT/repos discovery
            GET /rest/api/latest/projects discovery
            GET /rest/webhook/2.0/configurations listings
            GET /rest/webhook/2.0/configurations/event-types verification
            PUT /rest/webhook/2.0/configurations/7 writes
            GET /rest/webhook/1.0/projects/PLAT/repos/api/configurations listings";
        for line in table.lines() {
            let [method, path, purpose] = line.split_whitespace().collect::<Vec<_>>()[..] else {
                panic!("{line}");
            };
            let method: reqwest::Method = method.parse().expect("method");
            assert_eq!(Purpose::of(&method, path).name(), purpose, "{line}");
        }
    }

    #[test]
    fn spending_is_counted_by_purpose_over_the_hour() {
        let budget = Budget::per_hour(900);
        for _ in 0..3 {
            budget.spend(Purpose::Listings);
        }
        budget.spend(Purpose::Writes);
        let spent = budget.spent_last_hour();
        assert_eq!(budget.taken(), 4);
        assert_eq!(spent.len(), Purpose::ALL.len());
        assert!(spent.contains(&(Purpose::Listings, 3)));
        assert!(spent.contains(&(Purpose::Writes, 1)));
        assert!(spent.contains(&(Purpose::Health, 0)));
    }

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
    fn a_429_pauses_everything_and_doubles_until_a_success() {
        let budget = Budget::per_hour(1000);
        let first = Duration::from_secs(60);
        assert_eq!(budget.rate_limited(None, first), first);
        let wait = budget.try_acquire().expect_err("paused");
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert!(budget.paused_until().is_some());
        assert_eq!(budget.rate_limited(None, first), first * 2);
        assert_eq!(
            budget.rate_limited(Some(Duration::from_secs(5)), first),
            Duration::from_secs(5),
            "Retry-After wins"
        );
        for _ in 0..20 {
            budget.rate_limited(None, first);
        }
        assert_eq!(budget.rate_limited(None, first), MAX_PAUSE);
        let short = Budget::per_hour(1000);
        short.rate_limited(None, Duration::ZERO);
        assert!(
            short.try_acquire().is_ok(),
            "a pause that ended lets requests go"
        );
        short.succeeded();
        assert_eq!(short.rate_limited(None, first), first, "strikes reset");
    }

    #[test]
    fn failures_in_a_row_make_an_outage_and_an_answer_ends_it() {
        let budget = Budget::per_hour(1000);
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        budget.set_on_outage(Arc::new(move |h| {
            sink.lock().expect("lock").push(h);
        }));
        budget.failed();
        budget.answered();
        assert_eq!(
            *told.lock().expect("lock"),
            [Health::Answering],
            "one failure: retry the waiting"
        );
        assert!(budget.failing_since().is_none());
        for _ in 0..FAILING_AFTER + 2 {
            budget.failed();
        }
        assert!(budget.failing_since().is_some());
        budget.answered();
        budget.answered();
        assert_eq!(
            *told.lock().expect("lock"),
            [Health::Answering, Health::Failing, Health::Answering]
        );
        assert!(budget.failing_since().is_none());
    }

    #[test]
    fn the_allowance_is_the_ask_or_less_where_bitbucket_reports_less() {
        let budget = Budget::per_hour(900);
        budget.set_allowance(500);
        assert_eq!(budget.limit(), 500);
        budget.reported_limit(Some("api"), 2500, false);
        assert_eq!(budget.limit(), 500, "a larger report does not raise it");
        budget.reported_limit(Some("api"), 100, true);
        assert_eq!(budget.limit(), 100);
        budget.set_allowance(5000);
        assert_eq!(budget.limit(), 100, "Bitbucket's report still stands");
        let reported = budget.reported();
        assert_eq!(reported.len(), 1);
        assert_eq!((reported[0].limit, reported[0].near_limit), (100, true));
        for _ in 0..10 {
            assert!(budget.try_acquire().is_ok());
        }
        assert!(
            budget.try_acquire().is_err(),
            "the new bucket's burst is a tenth"
        );
        budget.reported_limit(Some("api"), 3000, false);
        assert_eq!(
            budget.limit(),
            3000,
            "the report changed: the ask (5000) or less"
        );
    }

    #[tokio::test]
    async fn waiting_requests_go_by_priority_and_place() {
        use super::super::queue::{Priority, Ticket};
        // A refill every 0.1 s once the burst is spent.
        let budget = Arc::new(Budget::per_hour(36_000 + 3_600));
        while budget.try_acquire().is_ok() {}
        let order = Arc::new(Mutex::new(Vec::new()));
        let asks = [
            ("health of a", Ticket::new(Priority::Health, &"a")),
            ("create in b", Ticket::new(Priority::Change, &"b")),
            ("drift of c", Ticket::new(Priority::Drift, &"c")),
            ("create in a", Ticket::new(Priority::Change, &"a")),
            ("unmarked", Ticket::current()),
        ];
        let mut tasks = Vec::new();
        for (name, ticket) in asks {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(ticket.scope(async move {
                budget
                    .acquire(Duration::from_secs(60))
                    .await
                    .expect("granted");
                order.lock().expect("lock").push(name);
            })));
            // Joined in this order, well within one refill.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(budget.queued(), 5);
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(
            *order.lock().expect("lock"),
            // a's create keeps a's turn (its health poll came first); then first come.
            [
                "create in a",
                "create in b",
                "unmarked",
                "drift of c",
                "health of a"
            ]
        );
        assert_eq!(budget.queued(), 0);
    }

    #[tokio::test]
    async fn the_impatient_and_those_too_far_back_are_told_how_long() {
        // One refill every 40 s.
        let budget = Arc::new(Budget::per_hour(100));
        while budget.try_acquire().is_ok() {}
        let wait = budget.acquire(Duration::ZERO).await.expect_err("no wait");
        assert!(wait > Duration::from_secs(30), "{wait:?}");
        let first = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.queued(), 1);
        // Behind it: its refill and one more.
        let wait = budget
            .acquire(Duration::from_secs(60))
            .await
            .expect_err("too far back");
        assert!(wait > Duration::from_secs(70), "{wait:?}");
        first.abort();
        let _ = first.await;
        assert_eq!(budget.queued(), 0, "a dropped request leaves the queue");
    }

    #[tokio::test]
    async fn periodic_work_takes_half_the_budget_at_most() {
        use super::super::queue::{Priority, Ticket};
        let budget = Budget::per_hour(100);
        let drift = || Ticket::new(Priority::Drift, &"a").scope(budget.acquire(Duration::ZERO));
        // Half of the burst of 10.
        for _ in 0..5 {
            drift().await.expect("within the share");
        }
        drift().await.expect_err("past the share");
        for _ in 0..5 {
            budget
                .acquire(Duration::ZERO)
                .await
                .expect("changes take the rest");
        }
        assert_eq!(budget.taken(), 0, "acquiring alone spends nothing counted");
    }

    #[test]
    fn tiny_budgets_still_work() {
        let budget = Budget::per_hour(1);
        assert!(budget.try_acquire().is_ok());
        assert!(budget.try_acquire().is_err());
    }
}
