use super::*;
use crate::api::HookCounts;
use crate::api::VerifiedBy;

const GENERATION: Option<i64> = Some(2);

fn at(s: &str) -> jiff::Timestamp {
    s.parse().expect("timestamp")
}

fn proof() -> Result<Proof, Error> {
    Ok(Proof {
        by: VerifiedBy::Identity,
        repository: None,
        reason: Reason::Verified,
        message: "authenticated to Bitbucket as ci-bot".to_owned(),
        at: None,
    })
}

fn failed(e: bitbucket::Error) -> Result<Proof, Error> {
    Err(Error::Bitbucket(e))
}

fn checked(result: Result<Proof, Error>) -> Found {
    Found::Checked {
        result,
        failing_since: Some(at("2026-01-01T00:00:00Z")),
    }
}

fn unavailable() -> bitbucket::Error {
    bitbucket::Error::Unavailable {
        message: "503 Service Unavailable".to_owned(),
    }
}

/// (type, status, reason) of each condition, in order.
fn said(status: &ConnectionStatus) -> Vec<(String, String, String)> {
    status
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn condition(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.to_owned(), status.to_owned(), reason.to_owned())
}

/// Runs the steps in order, each from the last one's status, and returns the last.
fn run(steps: Vec<Found>) -> Vec<Step> {
    let mut previous: Option<ConnectionStatus> = None;
    let mut all = Vec::new();
    for (i, found) in steps.into_iter().enumerate() {
        let now = at("2026-01-02T00:00:00Z") + jiff::SignedDuration::from_secs(60 * i as i64);
        let step = step(previous.as_ref(), GENERATION, found, None, None, now);
        previous = Some(step.status.clone());
        all.push(step);
    }
    all
}

fn reasons(step: &Step) -> Vec<(bool, Reason)> {
    step.notes.iter().map(|n| (n.warning, n.reason)).collect()
}

#[test]
fn a_verified_credential_is_ready_and_said_once() {
    let steps = run(vec![checked(proof()), checked(proof())]);
    assert_eq!(
        said(&steps[0].status),
        [condition("Ready", "True", "Verified")]
    );
    assert_eq!(steps[0].status.verified_by, Some(VerifiedBy::Identity));
    assert!(steps[0].status.last_verified_time.is_some());
    assert!(steps[0].error.is_none());
    assert_eq!(reasons(&steps[0]), [(false, Reason::Verified)]);
    assert!(steps[1].notes.is_empty(), "nothing changed, nothing said");
}

#[test]
fn an_outage_after_verification_keeps_ready_and_says_its_start_and_end() {
    let steps = run(vec![
        checked(proof()),
        checked(failed(unavailable())),
        checked(failed(unavailable())),
        checked(proof()),
    ]);
    assert_eq!(
        said(&steps[1].status),
        [
            condition("Ready", "True", "Verified"),
            condition("BitbucketUnavailable", "True", "BitbucketUnavailable"),
        ]
    );
    assert!(steps[1].error.as_ref().is_some_and(Error::transient));
    assert_eq!(reasons(&steps[1]), [(true, Reason::BitbucketUnavailable)]);
    assert!(steps[2].notes.is_empty(), "the outage is said once");
    assert_eq!(
        said(&steps[3].status),
        [condition("Ready", "True", "Verified")]
    );
    assert_eq!(reasons(&steps[3]), [(false, Reason::BitbucketRecovered)]);
}

#[test]
fn failures_before_verification_and_refusals_turn_ready_false() {
    let table = [
        (failed(unavailable()), "BitbucketUnavailable"),
        (
            failed(bitbucket::Error::Unauthorized {
                message: "401".to_owned(),
            }),
            "Unauthorized",
        ),
        // The operator's own budget spent is not Bitbucket failing.
        (
            failed(bitbucket::Error::RateLimited {
                retry_after: None,
                local: true,
            }),
            "RateLimited",
        ),
    ];
    for (result, reason) in table {
        let steps = run(vec![checked(result)]);
        assert_eq!(
            said(&steps[0].status),
            [condition("Ready", "False", reason)]
        );
        assert_eq!(steps[0].status.last_verified_time, None, "{reason}");
        assert_eq!(reasons(&steps[0]).len(), 1, "{reason}");
        assert!(reasons(&steps[0])[0].0, "{reason}: a warning");
    }
    // A refusal after a verification keeps when it was last verified.
    let steps = run(vec![
        checked(proof()),
        checked(failed(bitbucket::Error::Unauthorized {
            message: "401".to_owned(),
        })),
    ]);
    assert_eq!(
        said(&steps[1].status),
        [condition("Ready", "False", "Unauthorized")]
    );
    assert_eq!(
        steps[1].status.last_verified_time,
        steps[0].status.last_verified_time
    );
}

#[test]
fn a_pause_adds_rate_limited_keeps_ready_and_waits_until_it_ends() {
    let until = at("2026-01-02T00:11:00Z");
    let steps = run(vec![checked(proof()), Found::Paused { until }]);
    assert_eq!(
        said(&steps[1].status),
        [
            condition("Ready", "True", "Verified"),
            condition("RateLimited", "True", "RateLimited"),
        ]
    );
    match &steps[1].error {
        Some(Error::Bitbucket(bitbucket::Error::RateLimited {
            retry_after: Some(wait),
            local: false,
        })) => assert_eq!(wait.as_secs(), 600),
        other => panic!("{other:?}"),
    }
    assert!(steps[1].notes.is_empty());
}

#[test]
fn the_budget_is_shown_as_allowed() {
    use crate::bitbucket::budget::Purpose;
    let allowance = Allowance {
        per_hour: 300,
        shared_by: 2,
        reported: Vec::new(),
        spent: vec![
            (Purpose::Writes, 12),
            (Purpose::Listings, 30),
            (Purpose::Health, 0),
            (Purpose::Verification, 1),
            (Purpose::Discovery, 2),
        ],
        queued: 7,
        resync_every: Some(std::time::Duration::from_secs(4 * 3600)),
    };
    let step = step(
        None,
        GENERATION,
        checked(proof()),
        Some(allowance),
        None,
        at("2026-01-02T00:00:00Z"),
    );
    let budget = step.status.budget.expect("budget");
    assert_eq!(
        (budget.requests_per_hour, budget.shared_by, budget.queued),
        (300, 2, Some(7))
    );
    assert_eq!(budget.resync_every.as_deref(), Some("4h"));
    let spent = budget.spent_last_hour.expect("spent");
    assert_eq!(
        (
            spent.total,
            spent.writes,
            spent.listings,
            spent.health,
            spent.verification,
            spent.discovery
        ),
        (45, 12, 30, 0, 1, 2)
    );
}

#[test]
fn hooks_no_webhook_manages_and_urls_twice_are_counted() {
    let hook = |id: &str, url: &str| RemoteHook {
        id: id.to_owned(),
        url: url.to_owned(),
        ..RemoteHook::default()
    };
    let mut counts = HookCounts::default();
    let managed: HashSet<String> = ["1".to_owned()].into_iter().collect();
    let api = [
        hook("1", "https://ci/x"),
        hook("2", "https://ci/x"),
        hook("3", "https://chat/y"),
    ];
    count_place(&mut counts, &api, Some(&managed));
    count_place(&mut counts, &[hook("9", "https://ci/x")], None);
    assert_eq!(
        counts,
        HookCounts {
            places: 2,
            listed: 4,
            unmanaged: 3,
            duplicates: 1,
        }
    );
    assert_eq!(counted(HookCounts::default()), None);
    // Counted once, kept through a pause (nothing listed then).
    let counted = step(
        None,
        GENERATION,
        checked(proof()),
        None,
        Some(counts.clone()),
        at("2026-01-02T00:00:00Z"),
    );
    let paused = step(
        Some(&counted.status),
        GENERATION,
        Found::Paused {
            until: at("2026-01-02T01:00:00Z"),
        },
        None,
        None,
        at("2026-01-02T00:01:00Z"),
    );
    assert_eq!(paused.status.hooks, Some(counts));
}
