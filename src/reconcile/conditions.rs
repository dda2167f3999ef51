//! kstatus-style conditions: `Ready`, `Synced`, `Delivering`, and the abnormal-true
//! `Stalled` (a terminal error: a person must act) and `Reconciling` (work in flight),
//! present only while true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DELIVERING: &str = "Delivering";
pub const STALLED: &str = "Stalled";
pub const RECONCILING: &str = "Reconciling";

/// Reasons that need a person (a spec, credential, permission or repository to fix):
/// kstatus reports them as Stalled rather than as work in progress.
pub const TERMINAL_REASONS: &[&str] = &[
    "InvalidSpec",
    "Forbidden",
    "Unauthorized",
    "Conflict",
    "NotAllowed",
    "RepositoryNotFound",
    "Unsupported",
];

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Builds a condition, keeping the previous `lastTransitionTime` when the status did not
/// change (so an unchanged object gets an unchanged status).
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status.as_str())
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `Ready` from `Synced`: the hook on Bitbucket matches the spec. Delivery health never
/// flips it (a third party's endpoint is not the operator's to fix: GitOps health checks
/// and `dependsOn` must not stall on it); that is `Delivering`'s job.
pub fn ready(synced: &Condition) -> (Status, String, String) {
    match synced.status.as_str() {
        "True" => (Status::True, "Ready".to_owned(), synced.message.clone()),
        "Unknown" => (
            Status::Unknown,
            synced.reason.clone(),
            synced.message.clone(),
        ),
        _ => (Status::False, synced.reason.clone(), synced.message.clone()),
    }
}

/// Whether the Synced outcome is terminal (Stalled) or still in progress (Reconciling),
/// as (type, reason, message); None when synced.
pub fn progress(synced: &Condition) -> Option<(&'static str, String, String)> {
    if synced.status == "True" {
        return None;
    }
    let kind = if TERMINAL_REASONS.contains(&synced.reason.as_str()) {
        STALLED
    } else if synced.reason == "Drifted" || synced.reason == "NotFound" {
        // Reported by policy (driftPolicy Report, ObserveOnly): nothing in flight.
        return None;
    } else {
        RECONCILING
    };
    Some((kind, synced.reason.clone(), synced.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let first = condition(
            &[],
            SYNCED,
            Status::True,
            "InSync",
            "ok",
            Some(1),
            &now("2026-01-01T00:00:00Z"),
        );
        let same = condition(
            std::slice::from_ref(&first),
            SYNCED,
            Status::True,
            "InSync",
            "ok",
            Some(2),
            &now("2026-01-02T00:00:00Z"),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        let flipped = condition(
            &[same],
            SYNCED,
            Status::False,
            "Drifted",
            "x",
            Some(2),
            &now("2026-01-03T00:00:00Z"),
        );
        assert_eq!(flipped.last_transition_time, now("2026-01-03T00:00:00Z"));
    }

    #[test]
    fn terminal_reasons_stall_and_others_are_reconciling() {
        let t = now("2026-01-01T00:00:00Z");
        let table = [
            ("True", "InSync", None),
            ("False", "InvalidSpec", Some(STALLED)),
            ("False", "Forbidden", Some(STALLED)),
            ("False", "Conflict", Some(STALLED)),
            ("False", "NotAllowed", Some(STALLED)),
            ("False", "RepositoryNotFound", Some(STALLED)),
            ("False", "BitbucketUnavailable", Some(RECONCILING)),
            ("False", "RateLimited", Some(RECONCILING)),
            ("False", "ConnectionNotReady", Some(RECONCILING)),
            ("False", "SecretNotFound", Some(RECONCILING)),
            ("False", "Drifted", None),
        ];
        for (status, reason, expected) in table {
            let status = if status == "True" {
                Status::True
            } else {
                Status::False
            };
            let synced = condition(&[], SYNCED, status, reason, "m", None, &t);
            assert_eq!(progress(&synced).map(|p| p.0), expected, "{reason}");
        }
    }

    #[test]
    fn ready_follows_synced_and_a_failing_delivery() {
        let t = now("2026-01-01T00:00:00Z");
        let synced = condition(&[], SYNCED, Status::True, "InSync", "in sync", None, &t);
        let unknown = condition(
            &[],
            DELIVERING,
            Status::Unknown,
            "NotReportedByBitbucket",
            "",
            None,
            &t,
        );
        let failing = condition(
            &[],
            DELIVERING,
            Status::False,
            "DeliveriesFailing",
            "3 of 3 failed",
            None,
            &t,
        );
        let _ = (&unknown, &failing);
        // Delivery health, failing or not reported, never flips Ready.
        assert_eq!(ready(&synced).0, Status::True);
        let conflict = condition(&[], SYNCED, Status::False, "Conflict", "taken", None, &t);
        assert_eq!(ready(&conflict).1, "Conflict");
    }
}
