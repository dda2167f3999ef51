use super::*;
use crate::api::{WebhookSetSpec, WebhookStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn set() -> WebhookSet {
    let spec: WebhookSetSpec = serde_json::from_value(json!({
        "connectionRef": { "name": "bitbucket" },
        "selector": { "workspace": "acme" },
        "template": {
            "metadata": { "labels": { "team": "ci" } },
            "spec": { "url": "https://ci.example.com/hook", "events": ["repo:push"] },
        },
    }))
    .expect("spec");
    let mut set = WebhookSet::new("ci", spec);
    set.metadata.namespace = Some("team-a".to_owned());
    set.metadata.uid = Some("set-uid".to_owned());
    set
}

fn repo(text: &str) -> RepoRef {
    RepoRef::parse(text).expect("repo")
}

/// The steps with room to make every Webhook at once.
fn all_steps(want: &[Webhook], have: &[&Webhook]) -> Vec<Step> {
    steps(want, have, 64).0
}

fn wanted(set: &WebhookSet, repos: &[&str]) -> Vec<Webhook> {
    repos
        .iter()
        .map(|r| child(set, &repo(r)).expect("child"))
        .collect()
}

#[test]
fn child_names_are_stable_valid_and_distinct() {
    let a = child_name("ci", &repo("acme/api_gateway"));
    assert_eq!(a, child_name("ci", &repo("acme/api_gateway")));
    assert!(a.starts_with("ci-api-gateway-"), "{a}");
    assert_ne!(a, child_name("ci", &repo("acme/api-gateway")));
    assert_ne!(a, child_name("ci", &repo("other/api_gateway")));
    // Data Center project keys compare case-insensitively.
    assert_eq!(
        child_name("ci", &repo("PLAT/api")),
        child_name("ci", &repo("plat/api"))
    );
    let long = child_name(
        &"s".repeat(250),
        &repo(&format!("acme/{}", "x".repeat(200))),
    );
    assert!(long.len() <= 253, "{}", long.len());
    assert!(
        long.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
}

#[test]
fn patterns_include_and_exclude_by_slug() {
    let listed = [
        "acme/api-one",
        "acme/API-two",
        "acme/web",
        "acme/api-legacy",
    ]
    .map(repo)
    .to_vec();
    let got = select(
        listed.clone(),
        &["api-*".to_owned()],
        &["*-legacy".to_owned()],
    )
    .expect("select");
    assert_eq!(got, vec![repo("acme/api-one"), repo("acme/API-two")]);
    assert_eq!(select(listed.clone(), &[], &[]).expect("all").len(), 4);
    let err = select(listed, &["api-[".to_owned()], &[]).expect_err("bad pattern");
    assert!(err.to_string().contains("api-["), "{err}");
}

#[test]
fn missing_webhooks_are_created_and_current_ones_left_alone() {
    let set = set();
    let want = wanted(&set, &["acme/a", "acme/b"]);
    let have = want[0].clone();
    let steps = all_steps(&want, &[&have]);
    let [Step::Create(created)] = steps.as_slice() else {
        panic!("one create expected: {steps:?}");
    };
    assert_eq!(created.name_any(), want[1].name_any());
    assert_eq!(created.spec.repository, "acme/b");
    assert_eq!(created.labels()[WEBHOOKSET_LABEL], "ci");
    assert_eq!(created.labels()["team"], "ci");
    assert_eq!(created.annotations()[REPOSITORY_ANNOTATION], "acme/b");
    let owner = &created.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        ("set-uid", Some(true))
    );
}

#[test]
fn a_webhook_edited_by_hand_is_put_back_exactly() {
    let set = set();
    let want = wanted(&set, &["acme/a"]);
    let mut have = want[0].clone();
    have.metadata.resource_version = Some("7".to_owned());
    have.spec.settings.url = "https://elsewhere.example.com".to_owned();
    have.spec.settings.title = Some("added by hand".to_owned());
    let steps = all_steps(&want, &[&have]);
    let [Step::Update { name, patch }] = steps.as_slice() else {
        panic!("one update expected: {steps:?}");
    };
    assert_eq!(name, &want[0].name_any());
    assert_eq!(patch["spec"]["url"], "https://ci.example.com/hook");
    assert_eq!(patch["spec"]["title"], Value::Null, "{patch}");
    assert_eq!(patch["metadata"]["resourceVersion"], "7");
    // A label the template does not set stays; a removed template label comes back.
    let mut relabelled = want[0].clone();
    relabelled
        .labels_mut()
        .insert("extra".to_owned(), "kept".to_owned());
    assert!(all_steps(&want, &[&relabelled]).is_empty());
    relabelled.labels_mut().remove("team");
    assert_eq!(all_steps(&want, &[&relabelled]).len(), 1);
}

#[test]
fn webhooks_of_repositories_that_left_are_deleted_once() {
    let set = set();
    let old = wanted(&set, &["acme/a", "acme/gone"]);
    let want = wanted(&set, &["acme/a"]);
    let steps = all_steps(&want, &[&old[0], &old[1]]);
    let [Step::Delete { name }] = steps.as_slice() else {
        panic!("one delete expected: {steps:?}");
    };
    assert_eq!(name, &old[1].name_any());
    let mut going = old[1].clone();
    going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    assert!(all_steps(&want, &[&old[0], &going]).is_empty());
}

fn with_status(mut w: Webhook, ready: &str, stalled: bool, health: DeliveryHealth) -> Webhook {
    w.metadata.generation = Some(1);
    let condition = |type_: &str, status: &str| Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: "R".to_owned(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().expect("time"),
        ),
    };
    let mut conditions = vec![condition("Ready", ready)];
    if stalled {
        conditions.push(condition("Stalled", "True"));
    }
    w.status = Some(WebhookStatus {
        observed_generation: Some(1),
        conditions,
        delivery: Some(crate::api::DeliveryStatus {
            health,
            ..Default::default()
        }),
        ..Default::default()
    });
    w
}

#[test]
fn the_tally_counts_ready_failing_and_stalled() {
    let set = set();
    let want = wanted(&set, &["acme/a", "acme/b", "acme/c", "acme/d"]);
    let a = with_status(want[0].clone(), "True", false, DeliveryHealth::Failing);
    let b = with_status(want[1].clone(), "False", true, DeliveryHealth::Unknown);
    let c = with_status(want[2].clone(), "False", false, DeliveryHealth::Unknown);
    let t = tally(&want, &[&a, &b, &c]);
    assert_eq!(
        t,
        Tally {
            selected: 4,
            ready: 1,
            failing: 1,
            progressing: 2,
            waiting: 0,
            not_ready: vec!["acme/b".into(), "acme/c".into(), "acme/d".into()],
        }
    );
}

#[test]
fn webhooks_are_made_a_window_at_a_time() {
    let set = set();
    let repos: Vec<String> = (0..10).map(|i| format!("acme/r{i}")).collect();
    let names: Vec<&str> = repos.iter().map(String::as_str).collect();
    let want = wanted(&set, &names);
    let (first, waiting) = steps(&want, &[], 4);
    assert_eq!((first.len(), waiting), (4, 6));
    // Made but not Ready yet: they fill the window.
    let made: Vec<Webhook> = want[..4].to_vec();
    let have: Vec<&Webhook> = made.iter().collect();
    let (none, waiting) = steps(&want, &have, 4);
    assert_eq!((none.len(), waiting), (0, 6));
    // Two of them Ready (or Stalled: they will not get Ready by waiting): two more.
    let mut settled = made.clone();
    for (w, type_) in settled.iter_mut().take(2).zip(["Ready", "Stalled"]) {
        w.metadata.generation = Some(1);
        w.status = Some(WebhookStatus {
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: type_.to_owned(),
                status: "True".to_owned(),
                reason: "Ready".to_owned(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().expect("time"),
                ),
                observed_generation: Some(1),
            }],
            ..WebhookStatus::default()
        });
    }
    let have: Vec<&Webhook> = settled.iter().collect();
    let (next, waiting) = steps(&want, &have, 4);
    assert_eq!((next.len(), waiting), (2, 4));
    assert_eq!(creation_window(900), 2);
    assert_eq!(creation_window(3600), 5);
    assert_eq!(creation_window(1_000_000), 64);
}
