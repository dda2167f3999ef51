//! kstatus-style conditions: `Ready`, `Synced`, `Delivering`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DELIVERING: &str = "Delivering";

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

/// `Ready` from `Synced` and `Delivering`: True when synced and nothing fails.
pub fn ready(synced: &Condition, delivering: &Condition) -> (Status, String, String) {
    match (synced.status.as_str(), delivering.status.as_str()) {
        ("True", "False") => (
            Status::False,
            delivering.reason.clone(),
            delivering.message.clone(),
        ),
        ("True", _) => (Status::True, "Ready".to_owned(), synced.message.clone()),
        ("Unknown", _) => (
            Status::Unknown,
            synced.reason.clone(),
            synced.message.clone(),
        ),
        _ => (Status::False, synced.reason.clone(), synced.message.clone()),
    }
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
        assert_eq!(ready(&synced, &unknown).0, Status::True);
        assert_eq!(
            ready(&synced, &failing),
            (
                Status::False,
                "DeliveriesFailing".into(),
                "3 of 3 failed".into()
            )
        );
        let conflict = condition(&[], SYNCED, Status::False, "Conflict", "taken", None, &t);
        assert_eq!(ready(&conflict, &unknown).1, "Conflict");
    }
}
