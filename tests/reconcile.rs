//! The operator against a real kube-apiserver and `bitbucket-sim`, for each backend.
//! Objects are applied as YAML with kubectl; assertions read status, events and the
//! simulator's hooks and request counts.

mod support;

use std::time::Duration;

use bitbucket_events::signature;
use bitbucket_sim::receiver::Receiver;
use bitbucket_webhook_operator::api::Flavor;
use kube::ResourceExt;
use serde_json::json;
use support::{ADMIN, HEALTH, READER, RESYNC, World};

fn id_of(w: &bitbucket_webhook_operator::api::Webhook) -> String {
    w.status
        .as_ref()
        .and_then(|s| s.webhook_id.clone())
        .expect("webhookId recorded")
}

async fn lifecycle(flavor: Flavor) {
    let w = World::new("lifecycle", flavor).await;
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/a", "  title: CI\n"))
        .expect("apply");
    let ready = w.wait_ready("ci").await;
    let id = id_of(&ready);
    let status = ready.status.clone().expect("status");
    assert!(
        status.url.as_deref().is_some_and(|u| u.contains("api")),
        "{status:?}"
    );
    let hooks = w.hooks().await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (hooks[0]["url"].as_str(), hooks[0]["title"].as_str()),
        (Some("https://ci.example.com/a"), Some("CI"))
    );
    assert_eq!(
        status.origin,
        Some(bitbucket_webhook_operator::api::HookOrigin::Created)
    );
    // The pending-create mark goes with the create that set it (nothing else would
    // reconcile the Webhook to remove it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let current = w.webhooks().get("ci").await.expect("get");
        if !current
            .annotations()
            .contains_key("bitbucket.hooks.dev/pending-create")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pending-create mark stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second look at an unchanged Webhook writes nothing to Bitbucket.
    let writes = w.writes().await;
    tokio::time::sleep(RESYNC * 2 + Duration::from_secs(1)).await;
    assert_eq!(
        w.writes().await,
        writes,
        "an unchanged Webhook makes no Bitbucket writes on resync"
    );

    // Each field edited: updated in place, same id.
    let [push, _] = w.events();
    let edited = w
        .webhook_yaml(
            "ci",
            "https://ci.example.com/b",
            "  title: CI two\n  active: false\n  skipCertVerification: true\n",
        )
        .replace(&format!("[\"{push}\", "), "[");
    w.apply(&edited).expect("apply edit");
    let updated = w
        .wait_webhook("ci", "the edit synced", |h| {
            h.status.as_ref().is_some_and(|s| {
                s.observed_generation == h.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Synced" && c.status == "True")
            })
        })
        .await;
    assert_eq!(id_of(&updated), id, "updated in place");
    let hooks = w.hooks().await;
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook["url"], "https://ci.example.com/b");
    assert_eq!(hook["title"], "CI two");
    assert_eq!(hook["active"], false);
    assert_eq!(hook["skipCertVerification"], true);
    assert_eq!(hook["events"].as_array().map(Vec::len), Some(1));
    let events = w.event_names("CertificateVerificationSkipped");
    assert!(
        !events.trim().is_empty(),
        "a Warning event for skipCertVerification"
    );

    w.kubectl(&["delete", "webhook", "ci", "--wait=false"])
        .expect("delete");
    w.wait_gone("ci").await;
    assert!(w.hooks().await.is_empty(), "deleted from Bitbucket");
}

async fn orphan_and_observe_only(flavor: Flavor) {
    let w = World::new("orphan", flavor).await;
    w.apply(&w.webhook_yaml(
        "kept",
        "https://ci.example.com/kept",
        "  deletionPolicy: Orphan\n",
    ))
    .expect("apply");
    w.wait_ready("kept").await;
    w.kubectl(&["delete", "webhook", "kept", "--wait=false"])
        .expect("delete");
    w.wait_gone("kept").await;
    assert_eq!(w.hooks().await.len(), 1, "Orphan leaves the hook");

    // ObserveOnly: reports what is there, never writes, not even on delete.
    let writes = w.writes().await;
    w.apply(&w.webhook_yaml(
        "watcher",
        "https://ci.example.com/kept",
        "  managementPolicy: ObserveOnly\n  title: other\n",
    ))
    .expect("apply");
    let observed = w
        .wait_condition("watcher", "Synced", "False", "Drifted")
        .await;
    let message = &observed
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Synced")
                .map(|c| c.message.clone())
        })
        .unwrap_or_default();
    assert!(
        message.contains("title") && message.contains("ObserveOnly"),
        "{message}"
    );
    w.apply(&w.webhook_yaml(
        "missing",
        "https://ci.example.com/none",
        "  managementPolicy: ObserveOnly\n",
    ))
    .expect("apply");
    w.wait_condition("missing", "Synced", "False", "NotFound")
        .await;
    w.kubectl(&["delete", "webhook", "watcher", "missing", "--wait=false"])
        .expect("delete");
    w.wait_gone("watcher").await;
    assert_eq!(w.writes().await, writes, "ObserveOnly never writes");
    assert_eq!(w.hooks().await.len(), 1);
}

async fn drift(flavor: Flavor) {
    let w = World::new("drift", flavor).await;
    w.apply(&w.webhook_yaml("enforced", "https://ci.example.com/e", ""))
        .expect("apply");
    w.apply(&w.webhook_yaml(
        "reported",
        "https://ci.example.com/r",
        "  driftPolicy: Report\n",
    ))
    .expect("apply");
    let enforced = id_of(&w.wait_ready("enforced").await);
    let reported = id_of(&w.wait_ready("reported").await);
    let admin = reqwest::Client::new();
    let path = |id: &str| match flavor {
        Flavor::Cloud => format!(
            "{}/2.0/repositories/acme/api/hooks/{}",
            w.sim.base_url(),
            id.replace('{', "%7B").replace('}', "%7D")
        ),
        Flavor::DataCenter => format!(
            "{}/rest/api/latest/projects/PLAT/repos/api/webhooks/{id}",
            w.sim.base_url()
        ),
        Flavor::PostWebhooks => {
            format!("{}/rest/webhook/2.0/configurations/{id}", w.sim.base_url())
        }
    };
    // Edited behind our back: Enforce restores, Report reports. Data Center and Post
    // Webhooks replace on PUT, so the edit sends the whole hook back.
    for id in [&enforced, &reported] {
        let deactivate = match flavor {
            Flavor::Cloud => json!({ "active": false }),
            _ => {
                let mut whole: serde_json::Value = admin
                    .get(path(id))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .expect("read")
                    .json()
                    .await
                    .expect("json");
                let field = if flavor == Flavor::PostWebhooks {
                    "enabled"
                } else {
                    "active"
                };
                whole[field] = json!(false);
                whole
            }
        };
        let r = admin
            .put(path(id))
            .bearer_auth(ADMIN)
            .json(&deactivate)
            .send()
            .await
            .expect("edit");
        assert!(r.status().is_success(), "{}", r.status());
    }
    w.wait_condition("reported", "Synced", "False", "Drifted")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let hooks = w.hooks().await;
        let active = |id: &str| {
            hooks
                .iter()
                .find(|h| h["id"] == id)
                .map(|h| h["active"] == true)
        };
        if active(&enforced) == Some(true) {
            assert_eq!(active(&reported), Some(false), "Report leaves the change");
            break;
        }
        if std::time::Instant::now() > deadline {
            let status = w
                .webhooks()
                .get("enforced")
                .await
                .ok()
                .and_then(|h| h.status);
            let conditions: Vec<String> = status
                .iter()
                .flat_map(|s| &s.conditions)
                .map(|c| {
                    format!(
                        "{}={} {}: {} ({:?})",
                        c.type_, c.status, c.reason, c.message, c.last_transition_time
                    )
                })
                .collect();
            panic!(
                "{flavor:?}: the enforced hook was never restored; last sync {:?}, conditions {conditions:#?}; hooks {hooks:#?}",
                status.and_then(|s| s.last_sync_time)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Deleted behind our back: recreated on resync.
    let r = admin
        .delete(path(&enforced))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("delete");
    assert!(r.status().is_success());
    let recreated = w
        .wait_webhook("enforced", "a recreated hook", |h| {
            h.status
                .as_ref()
                .and_then(|s| s.webhook_id.clone())
                .is_some_and(|i| i != enforced)
        })
        .await;
    assert!(
        w.hooks()
            .await
            .iter()
            .any(|h| h["id"] == id_of(&recreated).as_str())
    );
    w.assert_no_strays().await;
}

/// The flavor's push event alone.
fn push(w: &World) -> Vec<String> {
    vec![w.events()[0].to_owned()]
}

/// A hook made by hand on the world's repository (the admin token, straight to Bitbucket).
async fn by_hand(
    w: &World,
    url: &str,
    events: Vec<String>,
) -> bitbucket_webhook_operator::bitbucket::RemoteHook {
    use bitbucket_webhook_operator::bitbucket;
    let backend = bitbucket::connect(bitbucket::ConnectionConfig {
        flavor: w.flavor,
        base_url: Some(w.base_url()),
        credentials: bitbucket::Credentials::Bearer(ADMIN.to_owned().into()),
        tls: Default::default(),
        budget: std::sync::Arc::new(bitbucket::Budget::per_hour(1000)),
        retry: Default::default(),
        observer: None,
    })
    .expect("client");
    let repo =
        bitbucket::Place::Repository(bitbucket::RepoRef::parse(&w.repository).expect("repo"));
    backend
        .create_hook(
            &repo,
            &bitbucket::HookSpec {
                title: "made by hand".into(),
                url: url.into(),
                active: true,
                events,
                secret: bitbucket::SecretChange::Keep,
                skip_cert_verification: false,
            },
        )
        .await
        .expect("a hook made by hand")
}

#[tokio::test]
async fn a_connection_counts_the_hooks_no_webhook_manages() {
    let w = World::new("unmanaged", Flavor::DataCenter).await;
    by_hand(&w, "https://ci.example.com/by-hand", push(&w)).await;
    by_hand(&w, "https://ci.example.com/by-hand", push(&w)).await;
    w.apply(&w.webhook_yaml("managed", "https://ci.example.com/managed", ""))
        .expect("apply");
    w.wait_ready("managed").await;
    // Counted from the Webhook's own listing (the count reads the listing cache only) at the connection's next reconcile.
    let started = std::time::Instant::now();
    let counts = loop {
        let counts = w
            .kubectl(&[
                "get",
                "bbconn",
                "bitbucket",
                "-o",
                "jsonpath={.status.hooks}",
            ])
            .unwrap_or_default();
        if counts.contains("\"unmanaged\":2") {
            break counts;
        }
        assert!(started.elapsed() < RESYNC * 4, "not counted: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts: serde_json::Value = serde_json::from_str(&counts).expect("JSON");
    assert_eq!(
        counts,
        json!({ "places": 1, "listed": 3, "unmanaged": 2, "duplicates": 1 })
    );
    let wide = w
        .kubectl(&["get", "bbconn", "bitbucket", "-o", "wide"])
        .expect("get");
    assert!(wide.contains("UNMANAGED"), "{wide}");
    let metrics = reqwest::get(format!("{}/metrics", support::metrics_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let series = format!(
        "bbwo_connection_hooks{{connection=\"{}/bitbucket\",kind=\"unmanaged\"}} 2",
        w.ns
    );
    assert!(metrics.contains(&series), "{series} not in the metrics");
}

async fn adoption_and_conflict(flavor: Flavor) {
    let w = World::new("adoption", flavor).await;
    // A hook made by hand before the Webhook existed.
    let existing = by_hand(&w, "https://ci.example.com/shared", push(&w)).await;
    w.apply(&w.webhook_yaml("first", "https://ci.example.com/shared", ""))
        .expect("apply");
    let first = w.wait_ready("first").await;
    assert_eq!(id_of(&first), existing.id, "adopted, not duplicated");
    assert_eq!(w.hooks().await.len(), 1);
    let adopted = w.event_names("Adopted");
    assert!(!adopted.trim().is_empty());

    // A second Webhook for the same repository and URL is refused.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later creationTimestamp
    w.apply(&w.webhook_yaml("second", "https://ci.example.com/shared", ""))
        .expect("apply");
    let second = w
        .wait_condition("second", "Synced", "False", "Conflict")
        .await;
    let message = support::synced_message(second);
    assert!(message.contains("first"), "{message}");
    assert_eq!(w.hooks().await.len(), 1);

    // A crash between Bitbucket's answer and the status write: the pending mark leads to
    // adoption even with adoption: Never.
    let all_events = w.events().iter().map(|e| e.to_string()).collect();
    let made = by_hand(&w, "https://ci.example.com/crash", all_events).await;
    let crashed = w
        .webhook_yaml("crashed", "https://ci.example.com/crash", "  adoption: Never\n")
        .replace("metadata: {name: crashed}", "metadata:\n  name: crashed\n  annotations: {bitbucket.hooks.dev/pending-create: \"https://ci.example.com/crash\"}");
    w.apply(&crashed).expect("apply");
    let recovered = w.wait_ready("crashed").await;
    assert_eq!(id_of(&recovered), made.id);
    assert!(
        !recovered
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("bitbucket.hooks.dev/pending-create")
    );
    assert_eq!(w.hooks().await.len(), 2, "no second hook after the crash");
    w.assert_no_strays().await;
}

async fn errors_name_their_cause(flavor: Flavor) {
    let w = World::new("errors", flavor).await;
    w.apply(&w.connection_yaml("bad-token", "no-such-token"))
        .expect("apply");
    w.apply(&w.connection_yaml("reader", READER))
        .expect("apply");
    w.apply(
        &w.webhook_yaml("bad-token", "https://ci.example.com/1", "")
            .replace("name: bitbucket}", "name: bad-token}"),
    )
    .expect("apply");
    w.apply(
        &w.webhook_yaml("not-admin", "https://ci.example.com/2", "")
            .replace("name: bitbucket}", "name: reader}"),
    )
    .expect("apply");
    w.apply(
        &w.webhook_yaml("no-repo", "https://ci.example.com/3", "")
            .replace(
                &format!("repository: {}", w.repository),
                "repository: PLAT/nope",
            ),
    )
    .expect("apply");
    let wrong = match flavor {
        Flavor::Cloud => ("repo:refs_changed", "repo:push"),
        Flavor::DataCenter => ("repo:push", "repo:refs_changed"),
        Flavor::PostWebhooks => ("repo:refs_changed", "ABSTRACT_REPOSITORY_REFS_CHANGED"),
    };
    let [push, _] = w.events();
    w.apply(
        &w.webhook_yaml("wrong-event", "https://ci.example.com/4", "")
            .replace(push, wrong.0),
    )
    .expect("apply");

    let m = support::synced_message(
        w.wait_condition("bad-token", "Synced", "False", "Unauthorized")
            .await,
    );
    assert!(
        m.contains("connection bad-token") && m.contains("rejected the credentials"),
        "{m}"
    );
    let m = support::synced_message(
        w.wait_condition("not-admin", "Synced", "False", "Forbidden")
            .await,
    );
    assert!(m.contains("must be a repository admin"), "{m}");
    let m = support::synced_message(
        w.wait_condition("no-repo", "Synced", "False", "RepositoryNotFound")
            .await,
    );
    assert!(m.contains("nope"), "{m}");
    let m = support::synced_message(
        w.wait_condition("wrong-event", "Synced", "False", "InvalidSpec")
            .await,
    );
    assert!(m.contains(&format!("did you mean {}?", wrong.1)), "{m}");
    // Terminal: kstatus sees Stalled with the reason, not work in progress.
    for (name, reason) in [
        ("bad-token", "Unauthorized"),
        ("not-admin", "Forbidden"),
        ("no-repo", "RepositoryNotFound"),
        ("wrong-event", "InvalidSpec"),
    ] {
        let h = w.wait_condition(name, "Stalled", "True", reason).await;
        let types: Vec<String> = h
            .status
            .map(|s| s.conditions.into_iter().map(|c| c.type_).collect())
            .unwrap_or_default();
        assert!(
            !types.contains(&"Reconciling".to_owned()),
            "{name}: {types:?}"
        );
    }
    assert!(w.hooks().await.is_empty(), "nothing was created");
    let reason = w
        .kubectl(&[
            "get",
            "bbconn",
            "bad-token",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ])
        .expect("get");
    assert_eq!(reason, "Unauthorized");
}

async fn secret_rotation(flavor: Flavor) {
    let w = World::new("secrets", flavor).await;
    let receiver = Receiver::start(false).await.expect("receiver");
    w.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: signing}\nstringData: {secret: first-secret}\n").expect("secret");
    w.apply(&w.webhook_yaml("signed", &receiver.url(), "  secretRef: {name: signing}\n"))
        .expect("apply");
    w.apply(&w.webhook_yaml(
        "generated",
        &format!("{}/gen", receiver.url()),
        "  secretRef: {name: made-for-me, generate: true}\n",
    ))
    .expect("apply");
    w.wait_ready("signed").await;
    w.wait_ready("generated").await;
    let [push, _] = w.events();
    w.ctl.emit(&w.repository, push).await.expect("emit");
    let first = receiver.received();
    let signed = first.iter().find(|r| r.path == "/hook").expect("delivery");
    signature::verify(
        b"first-secret",
        &signed.body,
        signed.header("X-Hub-Signature"),
    )
    .expect("signed with the first secret");
    let generated = w
        .kubectl(&[
            "get",
            "secret",
            "made-for-me",
            "-o",
            "jsonpath={.data.secret}",
        ])
        .expect("generated secret");
    assert!(!generated.is_empty());
    let owner = w
        .kubectl(&[
            "get",
            "secret",
            "made-for-me",
            "-o",
            "jsonpath={.metadata.ownerReferences[0].name}",
        ])
        .expect("owner");
    assert_eq!(owner, "generated");

    w.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: signing}\nstringData: {secret: second-secret}\n").expect("rotate");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = receiver.received().len();
        w.ctl.emit(&w.repository, push).await.expect("emit");
        let got = receiver.received();
        let latest = got[before..]
            .iter()
            .find(|r| r.path == "/hook")
            .expect("delivery");
        if signature::verify(
            b"second-secret",
            &latest.body,
            latest.header("X-Hub-Signature"),
        )
        .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated secret never reached Bitbucket"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

macro_rules! per_backend {
    ($($test:ident),*) => {
        mod cloud { use super::*; $(#[tokio::test] async fn $test() { super::$test(Flavor::Cloud).await })* }
        mod data_center { use super::*; $(#[tokio::test] async fn $test() { super::$test(Flavor::DataCenter).await })* }
        mod post_webhooks { use super::*; $(#[tokio::test] async fn $test() { super::$test(Flavor::PostWebhooks).await })* }
    };
}

per_backend!(
    lifecycle,
    orphan_and_observe_only,
    drift,
    adoption_and_conflict,
    errors_name_their_cause
);

#[tokio::test]
async fn cloud_secret_rotation_and_generation() {
    secret_rotation(Flavor::Cloud).await;
}

#[tokio::test]
async fn data_center_secret_rotation_and_generation() {
    secret_rotation(Flavor::DataCenter).await;
}

#[tokio::test]
async fn post_webhooks_refuses_a_signing_secret() {
    let w = World::new("pw-secret", Flavor::PostWebhooks).await;
    w.apply(&w.webhook_yaml(
        "signed",
        "https://ci.example.com/x",
        "  secretRef: {name: s, generate: true}\n",
    ))
    .expect("apply");
    w.wait_condition("signed", "Synced", "False", "InvalidSpec")
        .await;
    assert!(w.hooks().await.is_empty());
}

#[tokio::test]
async fn a_cluster_connection_refuses_other_namespaces_and_repositories() {
    let w = World::new("cluster-conn", Flavor::Cloud).await;
    let name = format!("shared-{}", w.ns);
    w.plane
        .kubectl_stdin(
            ["apply", "-n", support::OPERATOR_NAMESPACE, "-f", "-"],
            &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{token: {ADMIN}}}\n"),
        )
        .expect("secret");
    let cluster = format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: ClusterBitbucketConnection\nmetadata: {{name: {name}}}\nspec:\n  \
         flavor: Cloud\n  baseURL: {}\n  auth: {{type: Bearer, secretRef: {{name: {name}}}}}\n  \
         allowedNamespaces: {{matchLabels: {{team: {}}}}}\n  allowedRepositories: [\"acme/api\"]\n",
        w.base_url(),
        w.ns
    );
    w.apply(&cluster).expect("cluster connection");
    let use_cluster = |name: &str, repo: &str| {
        w.webhook_yaml(name, &format!("https://ci.example.com/{name}"), "")
            .replace(
                "connectionRef: {name: bitbucket}",
                &format!(
                    "connectionRef: {{kind: ClusterBitbucketConnection, name: shared-{}}}",
                    w.ns
                ),
            )
            .replace("repository: acme/api", &format!("repository: {repo}"))
    };
    w.ctl.reset_requests().await.expect("reset");
    w.apply(&use_cluster("refused", "acme/api")).expect("apply");
    let refused = w
        .wait_condition("refused", "Synced", "False", "NotAllowed")
        .await;
    let message = support::synced_message(refused);
    assert!(message.contains("does not allow namespace"), "{message}");
    assert_eq!(
        w.ctl.count("GET", "hooks").await.unwrap_or(0) + w.writes().await,
        0,
        "nothing sent to Bitbucket"
    );

    w.kubectl(&["label", "namespace", &w.ns, &format!("team={}", w.ns)])
        .expect("label");
    w.kubectl(&["annotate", "webhook", "refused", "nudge=1"])
        .expect("nudge");
    w.wait_ready("refused").await;
    w.apply(&use_cluster("other-repo", "acme/other"))
        .expect("apply");
    let other = w
        .wait_condition("other-repo", "Synced", "False", "NotAllowed")
        .await;
    let message = support::synced_message(other);
    assert!(
        message.contains("does not allow repository acme/other"),
        "{message}"
    );
    w.assert_no_strays().await;
}

#[tokio::test]
async fn a_resync_lists_each_repository_once() {
    let w = World::new("resync", Flavor::DataCenter).await;
    for i in 0..3 {
        w.apply(&w.webhook_yaml(&format!("h{i}"), &format!("https://ci.example.com/{i}"), ""))
            .expect("apply");
    }
    for i in 0..3 {
        w.wait_ready(&format!("h{i}")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.ctl.reset_requests().await.expect("reset");
    let periods = 3;
    tokio::time::sleep(RESYNC * periods).await;
    let rows = w.ctl.requests().await.expect("requests");
    let count = |keep: &dyn Fn(&str) -> bool| -> u64 {
        rows.iter()
            .filter(|r| r["method"] == "GET" && r["route"].as_str().is_some_and(keep))
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum()
    };
    let lists = count(&|p| p.ends_with("/repos/{repositorySlug}/webhooks"));
    // The project's own hooks (for the DuplicateDeliveries warning): refused here (the
    // token administers the repository only), and then not asked again while the
    // credential is the same (#23: a refusal repeated each list TTL only spent budget).
    let project_lists = count(&|p| p.ends_with("/projects/{projectKey}/webhooks"));
    let single: u64 = rows
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["route"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/webhooks/{webhookId}"))
        })
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    let statistics: u64 = rows
        .iter()
        .filter(|r| {
            r["route"]
                .as_str()
                .is_some_and(|p| p.contains("/statistics"))
        })
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(single, 0, "never a GET of one hook");
    assert_eq!(statistics, 0, "statistics come with the listing");
    assert!(lists >= 1, "resyncs happened");
    // Data Center health reads statistics every HEALTH (a divisor of RESYNC): one listing
    // per repository per health slot serves the health of all three and the resync.
    let slots = u64::from(periods) * (RESYNC.as_millis() / HEALTH.as_millis()) as u64;
    assert!(
        lists <= slots + 1,
        "one list per repository per slot, not per Webhook: {lists} lists in {slots} health slots"
    );
    assert!(
        project_lists <= 1,
        "a refused listing of the project's hooks is asked at most once: {project_lists} in {periods} periods"
    );
    assert_eq!(w.writes().await, 0);
}

#[tokio::test]
async fn an_unreachable_deletion_retries_until_force_orphan_releases_it() {
    let w = World::new("force-orphan", Flavor::DataCenter).await;
    w.apply(&w.webhook_yaml("stuck", "https://ci.example.com/stuck", ""))
        .expect("apply");
    w.wait_ready("stuck").await;
    // Bitbucket starts failing every request: the delete cannot get through.
    w.ctl
        .faults(json!({ "errorRate": 1.0, "status": 503 }))
        .await
        .expect("faults");
    w.kubectl(&["delete", "webhook", "stuck", "--wait=false"])
        .expect("delete");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = w
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "reason=DeleteFailed",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .expect("events");
        if events.contains("force-orphan") {
            break;
        }
        if std::time::Instant::now() > deadline {
            let all = w
                .kubectl(&["get", "events", "-o", "wide"])
                .unwrap_or_default();
            panic!("no DeleteFailed event naming the way out:\n{all}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        w.webhooks().get_opt("stuck").await.expect("get").is_some(),
        "held by the finalizer while Bitbucket fails"
    );
    w.kubectl(&[
        "annotate",
        "webhook",
        "stuck",
        "bitbucket.hooks.dev/force-orphan=true",
    ])
    .expect("annotate");
    w.wait_gone("stuck").await;
    w.ctl.clear_faults().await.expect("clear");
    assert_eq!(w.hooks().await.len(), 1, "force-orphan leaves the hook");
}
