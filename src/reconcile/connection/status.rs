//! A connection's status (pure): from what this reconcile found to the new status, the
//! error to requeue on and the Events that tell about the change.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::budgets::Allowance;
use super::prove::Proof;
use crate::api::{
    BudgetSpending, BudgetStatus, ConnectionStatus, HookCounts, Reason, ReportedLimit,
};
use crate::bitbucket;
use crate::bitbucket::RemoteHook;
use crate::bitbucket::budget::Purpose;
use crate::reconcile::Error;
use crate::reconcile::conditions::{self, Outcome, Status};
use crate::reconcile::publish::Note;

/// The condition a connection carries while Bitbucket's rate limit pauses its requests.
pub const RATE_LIMITED: &str = "RateLimited";

/// The condition a connection carries while Bitbucket fails its requests.
pub const BITBUCKET_UNAVAILABLE: &str = "BitbucketUnavailable";

/// The condition a connection carries while it is being deleted and Webhooks still use it.
pub const IN_USE: &str = "InUse";

/// What a reconcile of a connection found.
pub enum Found {
    /// Bitbucket's 429 pauses every request until then: nothing was asked.
    Paused { until: jiff::Timestamp },
    /// What proving the credential said; `failing_since`: since when Bitbucket has failed
    /// the credential's requests, while it does.
    Checked {
        result: Result<Proof, Error>,
        failing_since: Option<jiff::Timestamp>,
    },
}

/// The outcome of one reconcile.
pub struct Step {
    pub status: ConnectionStatus,
    /// Why to requeue sooner (or not at all) than the resync.
    pub error: Option<Error>,
    pub notes: Vec<Note>,
}

/// The new status of a connection whose status was `previous` (of `generation`).
pub fn step(
    previous: Option<&ConnectionStatus>,
    generation: Option<i64>,
    found: Found,
    allowance: Option<Allowance>,
    hooks: Option<HookCounts>,
    now: jiff::Timestamp,
) -> Step {
    let before = previous.cloned().unwrap_or_default();
    let (mut status, error) = checked(before.clone(), generation, found, Time(now));
    status.budget = allowance.map(budget_status);
    // A pause or outage keeps what was counted before.
    status.hooks = hooks.or(status.hooks);
    let notes = notes(&before, &status, error.is_none());
    Step {
        status,
        error,
        notes,
    }
}

fn checked(
    previous: ConnectionStatus,
    generation: Option<i64>,
    found: Found,
    now: Time,
) -> (ConnectionStatus, Option<Error>) {
    let (result, failing_since) = match found {
        Found::Paused { until } => {
            // No request may go out now; Ready stays what the last check found.
            let outcome = Outcome::new(
                Status::True,
                Reason::RateLimited,
                format!(
                    "Bitbucket answered 429 (too many requests for this credential): every request waits until {until}"
                ),
            );
            let left =
                std::time::Duration::try_from(until.duration_since(now.0)).unwrap_or_default();
            let paused = bitbucket::Error::RateLimited {
                retry_after: Some(left),
                local: false,
            };
            let status = with_condition(previous, RATE_LIMITED, &outcome, generation, &now);
            return (status, Some(paused.into()));
        }
        Found::Checked {
            result,
            failing_since,
        } => (result, failing_since),
    };
    let verified_before = conditions::find(&previous.conditions, conditions::READY)
        .is_some_and(|c| Status::of(c) == Status::True && c.observed_generation == generation);
    match result {
        // Bitbucket fails now, not the credential (and not the operator's budget being
        // spent): Ready stays, and the outage is said apart until Bitbucket answers again.
        Err(Error::Bitbucket(failure))
            if verified_before
                && failure.retryable()
                && !matches!(failure, bitbucket::Error::RateLimited { local: true, .. }) =>
        {
            let e = Error::Bitbucket(failure);
            let since = failing_since.map_or_else(|| "now".to_owned(), |t| t.to_string());
            let outcome = Outcome::new(
                Status::True,
                e.reason(),
                format!(
                    "Bitbucket fails the requests of this credential (since {since}): {e}; Webhooks waiting on it are retried as soon as it answers again"
                ),
            );
            let status =
                with_condition(previous, BITBUCKET_UNAVAILABLE, &outcome, generation, &now);
            (status, Some(e))
        }
        result => (
            ready(previous, generation, result.as_ref(), &now),
            result.err(),
        ),
    }
}

/// The status with a fresh Ready, and nothing else that was a passing state.
fn ready(
    previous: ConnectionStatus,
    generation: Option<i64>,
    result: Result<&Proof, &Error>,
    now: &Time,
) -> ConnectionStatus {
    let outcome = match result {
        Ok(proof) => Outcome::new(Status::True, proof.reason, proof.message.clone()),
        Err(e) => Outcome::new(Status::False, e.reason(), e.to_string()),
    };
    let proof = result.ok();
    ConnectionStatus {
        observed_generation: generation,
        last_verified_time: match proof {
            Some(p) => Some(p.at.map_or_else(|| now.clone(), Time)),
            None => previous.last_verified_time.clone(),
        },
        verified_by: proof.map(|p| p.by),
        verified_repository: proof.and_then(|p| p.repository.clone()),
        budget: None,
        hooks: previous.hooks.clone(),
        conditions: vec![conditions::condition(
            &previous.conditions,
            conditions::READY,
            &outcome,
            generation,
            now,
        )],
    }
}

/// The status as it was, with the condition `type_` set to `outcome` (the others, Ready
/// among them, kept as they are).
pub fn with_condition(
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

/// Adds one place's listing to `counts`: hooks whose id is not among the ids the
/// connection's Webhooks record there (`managed`), and URLs a second time on the place.
pub fn count_place(
    counts: &mut HookCounts,
    hooks: &[RemoteHook],
    managed: Option<&HashSet<String>>,
) {
    let mut urls = HashSet::new();
    counts.places += 1;
    for hook in hooks {
        counts.listed += 1;
        if managed.is_none_or(|ids| !ids.contains(&hook.id)) {
            counts.unmanaged += 1;
        }
        if !urls.insert(hook.url.as_str()) {
            counts.duplicates += 1;
        }
    }
}

/// The counts to show: None when no listing was held (nothing is known yet).
pub fn counted(counts: HookCounts) -> Option<HookCounts> {
    (counts.places > 0).then_some(counts)
}

fn budget_status(allowance: Allowance) -> BudgetStatus {
    let spent = |purpose: Purpose| {
        allowance
            .spent
            .iter()
            .filter(|(p, _)| *p == purpose)
            .map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .sum::<i64>()
    };
    let spending = BudgetSpending {
        total: Purpose::ALL.into_iter().map(spent).sum(),
        writes: spent(Purpose::Writes),
        listings: spent(Purpose::Listings),
        health: spent(Purpose::Health),
        verification: spent(Purpose::Verification),
        discovery: spent(Purpose::Discovery),
    };
    BudgetStatus {
        spent_last_hour: Some(spending),
        queued: Some(i64::try_from(allowance.queued).unwrap_or(i64::MAX)),
        resync_every: allowance.resync_every.map(|d| {
            // jiff's friendly format: "4h", "10m", "1h 30m".
            format!(
                "{:#}",
                jiff::SignedDuration::from_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            )
        }),
        requests_per_hour: i64::from(allowance.per_hour),
        shared_by: i64::try_from(allowance.shared_by).unwrap_or(i64::MAX),
        reported: allowance
            .reported
            .into_iter()
            .map(|r| ReportedLimit {
                resource: r.resource,
                limit: i64::from(r.limit),
                near_limit: r.near_limit,
                time: Time(r.at),
            })
            .collect(),
    }
}

/// Events for what changed: Ready's status or reason, an outage's start and its end.
fn notes(before: &ConnectionStatus, after: &ConnectionStatus, ok: bool) -> Vec<Note> {
    let mut notes = Vec::new();
    let ready = |s: &ConnectionStatus| conditions::find(&s.conditions, conditions::READY).cloned();
    if let Some(now) = ready(after).or_else(|| after.conditions.first().cloned())
        && ready(before).is_none_or(|b| b.status != now.status || b.reason != now.reason)
    {
        notes.push(note(!ok, &now));
    }
    fn outage(s: &ConnectionStatus) -> Option<&Condition> {
        conditions::find(&s.conditions, BITBUCKET_UNAVAILABLE)
    }
    match (outage(before), outage(after)) {
        (None, Some(began)) => notes.push(note(true, began)),
        // The outage is over: said once, as its start was.
        (Some(was), None) => notes.push(Note::normal(
            Reason::BitbucketRecovered,
            ACTION,
            format!(
                "Bitbucket answers this credential's requests again (failing since {}); the Webhooks waiting on it are retried",
                was.last_transition_time.0
            ),
        )),
        _ => {}
    }
    notes
}

const ACTION: &str = "VerifyCredentials";

/// An Event saying what a condition says (its reason was written from a `Reason`).
fn note(warning: bool, condition: &Condition) -> Note {
    Note {
        warning,
        reason: conditions::reason(condition).unwrap_or(Reason::ConnectionNotReady),
        action: ACTION,
        message: condition.message.clone(),
    }
}

#[cfg(test)]
mod tests;
