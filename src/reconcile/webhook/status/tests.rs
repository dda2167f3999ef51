//! The pure status step, table-driven like `plan()`.

use super::*;
use crate::bitbucket::{Place, RepoRef};

fn webhook(previous: Option<WebhookStatus>, generation: i64) -> Webhook {
    let mut w = super::super::fixture::webhook(serde_json::json!({}), &[]);
    w.metadata.generation = Some(generation);
    w.status = previous;
    w
}

fn report(id: Option<&str>, done: Done) -> Report {
    Report {
        id: id.map(str::to_owned),
        done,
        place: Place::Repository(RepoRef::parse("team/app").expect("repo")),
        page: "https://bitbucket.org/team/app/admin/webhooks".to_owned(),
        secret_version: None,
        inherited_duplicate: None,
    }
}

fn now() -> Time {
    Time("2026-11-26T12:00:00Z".parse().expect("time"))
}

fn condition<'a>(s: &'a WebhookStatus, type_: &str) -> (&'a str, &'a str) {
    let c = conditions::find(&s.conditions, type_).expect("condition");
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn outcomes_set_ready_synced_stalled_and_origin() {
    let conflict = Error::Conflict {
        holder: "a/first".into(),
    };
    let unavailable = Error::Bitbucket(crate::bitbucket::Error::Unavailable {
        message: "503".into(),
    });
    type Row<'a> = (
        Result<Report, &'a Error>,
        (&'a str, &'a str),
        Option<(&'a str, &'a str)>,
        Option<HookOrigin>,
    );
    let table: Vec<Row> = vec![
        (
            Ok(report(Some("1"), Done::Created)),
            ("True", "Ready"),
            None,
            Some(HookOrigin::Created),
        ),
        (
            Ok(report(Some("1"), Done::Adopted)),
            ("True", "Ready"),
            None,
            Some(HookOrigin::Adopted),
        ),
        (
            Ok(report(Some("1"), Done::InSync)),
            ("True", "Ready"),
            None,
            None,
        ),
        (
            Ok(report(Some("1"), Done::Drifted(vec![Field::Url]))),
            ("False", "Drifted"),
            None,
            None,
        ),
        (
            Err(&conflict),
            ("False", "Conflict"),
            Some(("Stalled", "Conflict")),
            None,
        ),
        (
            Err(&unavailable),
            ("False", "BitbucketUnavailable"),
            Some(("Reconciling", "BitbucketUnavailable")),
            None,
        ),
    ];
    for (i, (result, ready, progress, origin)) in table.into_iter().enumerate() {
        let w = webhook(None, 1);
        let s = new_status(&w, result.as_ref().map_err(|e| *e), None, now());
        assert_eq!(condition(&s, conditions::READY), ready, "case {i}");
        let got = [conditions::STALLED, conditions::RECONCILING]
            .into_iter()
            .find_map(|t| conditions::find(&s.conditions, t))
            .map(|c| (c.type_.as_str(), c.reason.as_str()));
        assert_eq!(got, progress, "case {i}");
        assert_eq!(s.origin, origin, "case {i}");
        assert_eq!(
            condition(&s, conditions::DELIVERING).0,
            "Unknown",
            "case {i}: no assessment, nothing known"
        );
    }
}

#[test]
fn the_origin_survives_later_syncs_and_goes_with_the_hook() {
    let created = new_status(
        &webhook(None, 1),
        Ok(&report(Some("1"), Done::Created)),
        None,
        now(),
    );
    let w = webhook(Some(created.clone()), 2);
    let updated = new_status(
        &w,
        Ok(&report(Some("1"), Done::Updated(vec![Field::Events]))),
        None,
        now(),
    );
    assert_eq!(updated.origin, Some(HookOrigin::Created));
    let w = webhook(Some(updated), 2);
    let gone = new_status(
        &w,
        Ok(&report(None, Done::Missing { deleted: true })),
        None,
        now(),
    );
    assert_eq!(gone.origin, None);
    let failed = new_status(
        &webhook(Some(created), 3),
        Err(&Error::Bitbucket(crate::bitbucket::Error::Unavailable {
            message: "503".into(),
        })),
        None,
        now(),
    );
    assert_eq!(
        (failed.origin, failed.webhook_id.as_deref()),
        (Some(HookOrigin::Created), Some("1")),
        "a failure keeps what was known"
    );
}

#[test]
fn events_tell_actions_and_changes_not_quiet_steps() {
    let first = report(Some("1"), Done::Created);
    let w = webhook(None, 1);
    let created = new_status(&w, Ok(&first), None, now());
    let notes = events(&w, Ok(&first), &created, None);
    let reasons: Vec<_> = notes.iter().map(|n| (n.warning, n.reason)).collect();
    assert_eq!(reasons, [(false, Reason::Created)]);

    // Created -> InSync: both Synced=True, no action: nothing to tell.
    let w = webhook(Some(created.clone()), 1);
    let in_sync = report(Some("1"), Done::InSync);
    let quiet = new_status(&w, Ok(&in_sync), None, now());
    assert!(events(&w, Ok(&in_sync), &quiet, None).is_empty());

    // A failure is told once, then again only when it changes.
    let failure = Error::Bitbucket(crate::bitbucket::Error::Unavailable {
        message: "503".into(),
    });
    let failed = new_status(&w, Err(&failure), None, now());
    let notes = events(&w, Err(&failure), &failed, None);
    assert_eq!(
        notes
            .iter()
            .map(|n| (n.warning, n.reason))
            .collect::<Vec<_>>(),
        [(true, Reason::BitbucketUnavailable)]
    );
    let w = webhook(Some(failed.clone()), 1);
    assert!(events(&w, Err(&failure), &failed, None).is_empty());
    let other = Error::Conflict {
        holder: "a/b".into(),
    };
    let conflicted = new_status(&w, Err(&other), None, now());
    assert_eq!(events(&w, Err(&other), &conflicted, None).len(), 1);
}

#[test]
fn skipping_certificate_checks_is_warned_once_per_generation() {
    let mut w = webhook(None, 1);
    w.spec.settings.skip_cert_verification = true;
    let r = report(Some("1"), Done::Created);
    let s = new_status(&w, Ok(&r), None, now());
    let notes = events(&w, Ok(&r), &s, None);
    assert!(
        notes
            .iter()
            .any(|n| n.warning && n.reason == Reason::CertificateVerificationSkipped)
    );
    let mut again = webhook(Some(s.clone()), 1);
    again.spec.settings.skip_cert_verification = true;
    let r = report(Some("1"), Done::InSync);
    assert!(events(&again, Ok(&r), &s, None).is_empty());
}

#[test]
fn a_status_that_only_confirms_is_not_written_within_the_refresh() {
    let refresh = std::time::Duration::from_secs(300);
    let at = |s: &str| -> jiff::Timestamp { s.parse().expect("time") };
    let w = webhook(None, 1);
    let first = new_status(&w, Ok(&report(Some("1"), Done::Created)), None, now());
    assert!(worth_writing(
        None,
        &first,
        refresh,
        at("2026-11-26T12:00:00Z")
    ));
    let w = webhook(Some(first.clone()), 1);
    let later = |t: &str| new_status(&w, Ok(&report(Some("1"), Done::InSync)), None, Time(at(t)));
    // A check right after the create finds the hook as created: Synced keeps saying how
    // it came to be in sync, so there is nothing new to write.
    let checked = later("2026-11-26T12:01:00Z");
    assert_eq!(condition(&checked, "Synced"), ("True", "Created"));
    assert!(
        !worth_writing(Some(&first), &checked, refresh, at("2026-11-26T12:01:00Z")),
        "nothing new, recorded a minute ago"
    );
    assert!(
        worth_writing(
            Some(&first),
            &later("2026-11-26T12:07:00Z"),
            refresh,
            at("2026-11-26T12:07:00Z")
        ),
        "nothing new, but the recorded time is older than the refresh"
    );
    // A new generation in sync without an action of this operator is InSync.
    let w = webhook(Some(first.clone()), 2);
    let edited = new_status(&w, Ok(&report(Some("1"), Done::InSync)), None, now());
    assert_eq!(condition(&edited, "Synced"), ("True", "InSync"));
}
