//! kstatus-style conditions: `Ready`, `Synced`, `Delivering`, and the abnormal-true
//! `Stalled` (a terminal error: a person must act) and `Reconciling` (work in flight),
//! present only while true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::Reason;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DELIVERING: &str = "Delivering";
pub const STALLED: &str = "Stalled";
pub const RECONCILING: &str = "Reconciling";
/// True while a project or workspace hook with the same URL doubles every delivery;
/// absent otherwise.
pub const DUPLICATE_DELIVERIES: &str = "DuplicateDeliveries";

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

    /// A condition's status as written ("True", "False", anything else: Unknown).
    pub fn of(condition: &Condition) -> Status {
        match condition.status.as_str() {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        }
    }
}

/// The status of the condition of a type, if present.
pub fn status(conditions: &[Condition], type_: &str) -> Option<Status> {
    find(conditions, type_).map(Status::of)
}

/// Whether the condition of a type is present and True.
pub fn holds(conditions: &[Condition], type_: &str) -> bool {
    status(conditions, type_) == Some(Status::True)
}

/// The reason of a condition as a [`Reason`] (one written by an older version may not
/// parse: None).
pub fn reason(condition: &Condition) -> Option<Reason> {
    condition.reason.parse().ok()
}

/// What a condition says, before it is dated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl Outcome {
    pub fn new(status: Status, reason: Reason, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Builds a condition, keeping the previous `lastTransitionTime` when the status did not
/// change (so an unchanged object gets an unchanged status).
pub fn condition(
    previous: &[Condition],
    type_: &str,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = outcome.status.as_str();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: outcome.reason.as_str().to_owned(),
        message: outcome.message.clone(),
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
pub fn ready(synced: &Outcome) -> Outcome {
    match synced.status {
        Status::True => Outcome::new(Status::True, Reason::Ready, synced.message.clone()),
        _ => synced.clone(),
    }
}

/// Whether the Synced outcome is terminal (Stalled) or still in progress (Reconciling),
/// as (type, outcome); None when synced or when policy only reports.
pub fn progress(synced: &Outcome) -> Option<(&'static str, Outcome)> {
    progress_of(synced, synced.reason.is_terminal())
}

/// The same where the object itself knows whether a person must act (`terminal`): a
/// WebhookSet whose Webhooks are not Ready is stalled only when none of them progresses.
pub fn progress_of(synced: &Outcome, terminal: bool) -> Option<(&'static str, Outcome)> {
    if synced.status == Status::True || synced.reason.is_reported() {
        return None;
    }
    let kind = if terminal { STALLED } else { RECONCILING };
    Some((
        kind,
        Outcome::new(Status::True, synced.reason, synced.message.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let in_sync = Outcome::new(Status::True, Reason::InSync, "ok");
        let first = condition(&[], SYNCED, &in_sync, Some(1), &now("2026-01-01T00:00:00Z"));
        let same = condition(
            std::slice::from_ref(&first),
            SYNCED,
            &in_sync,
            Some(2),
            &now("2026-01-02T00:00:00Z"),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        let flipped = condition(
            &[same],
            SYNCED,
            &Outcome::new(Status::False, Reason::Drifted, "x"),
            Some(2),
            &now("2026-01-03T00:00:00Z"),
        );
        assert_eq!(flipped.last_transition_time, now("2026-01-03T00:00:00Z"));
    }

    #[test]
    fn terminal_reasons_stall_and_others_are_reconciling() {
        let table = [
            (Status::True, Reason::InSync, None),
            (Status::False, Reason::InvalidSpec, Some(STALLED)),
            (Status::False, Reason::Forbidden, Some(STALLED)),
            (Status::False, Reason::Unauthorized, Some(STALLED)),
            (Status::False, Reason::Conflict, Some(STALLED)),
            (Status::False, Reason::NotAllowed, Some(STALLED)),
            (Status::False, Reason::RepositoryNotFound, Some(STALLED)),
            (Status::False, Reason::Unsupported, Some(STALLED)),
            (
                Status::False,
                Reason::BitbucketUnavailable,
                Some(RECONCILING),
            ),
            (Status::False, Reason::RateLimited, Some(RECONCILING)),
            (Status::False, Reason::ConnectionNotReady, Some(RECONCILING)),
            (Status::False, Reason::SecretNotFound, Some(RECONCILING)),
            (Status::Unknown, Reason::KubernetesError, Some(RECONCILING)),
            (Status::False, Reason::Drifted, None),
            (Status::False, Reason::NotFound, None),
        ];
        for (status, reason, expected) in table {
            let synced = Outcome::new(status, reason, "m");
            let got = progress(&synced);
            assert_eq!(got.as_ref().map(|p| p.0), expected, "{reason}");
            if let Some((_, outcome)) = got {
                assert_eq!((outcome.status, outcome.reason), (Status::True, reason));
            }
        }
    }

    #[test]
    fn ready_follows_synced_only() {
        let synced = Outcome::new(Status::True, Reason::Created, "created hook 1");
        assert_eq!(
            ready(&synced),
            Outcome::new(Status::True, Reason::Ready, "created hook 1")
        );
        let conflict = Outcome::new(Status::False, Reason::Conflict, "taken");
        assert_eq!(ready(&conflict), conflict);
    }
}
