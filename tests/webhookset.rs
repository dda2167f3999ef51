//! Many repositories at once, on the real control plane against the simulator:
//! WebhookSets (discovery over a Cloud workspace project, repositories that come and go,
//! hand edits put back, deletion of the set, an explicit Data Center list with the
//! Orphan policy, selectors that cannot work) and Webhooks at the project or workspace
//! level with the warning for a repository hook that doubles one.

mod support;

use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::{
    Flavor, REPOSITORY_ANNOTATION, WEBHOOKSET_LABEL, Webhook, WebhookSet,
};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use support::{ADMIN, World, is_ready};

/// The bulk connection's own credential: Bitbucket counts requests per credential, and
/// so do the budgets, so it must not share the world's ADMIN token (whose connection asks
/// for the default 900/h; one credential gets the smallest of its connections' budgets).
const BULK: &str = "bulk-token";

/// A connection with budget enough for a hundred repositories at once.
async fn bulk_connection(w: &World) -> String {
    w.ctl.token(BULK, "carol").await.expect("token");
    w.connection_yaml("bulk", BULK)
        .replace("  auth:", "  rateLimit: {requestsPerHour: 100000}\n  auth:")
}

fn sets(w: &World) -> Api<WebhookSet> {
    Api::namespaced(w.client.clone(), &w.ns)
}

/// Waits until `check` holds for the set, or fails with its last status.
async fn wait_set(
    w: &World,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&WebhookSet) -> bool,
) -> WebhookSet {
    let deadline = Instant::now() + timeout;
    loop {
        let current = sets(w).get_opt(name).await.ok().flatten();
        if let Some(s) = &current
            && check(s)
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for {what}; last status: {:#?}",
            current.and_then(|s| s.status)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ready_with(s: &WebhookSet, selected: i32) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.observed_generation == s.metadata.generation
            && st.selected == selected
            && st.ready == selected
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Every hook in the test's simulator: (repository, url) pairs.
async fn hooked(w: &World) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = w
        .ctl
        .hooks()
        .await
        .expect("hooks")
        .iter()
        .map(|h| {
            (
                h["repository"].as_str().unwrap_or_default().to_owned(),
                h["url"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

async fn children(w: &World, set: &str) -> Vec<Webhook> {
    w.webhooks()
        .list(&ListParams::default().labels(&format!("{WEBHOOKSET_LABEL}={set}")))
        .await
        .expect("list")
        .items
}

/// Waits until the set has `count` Webhooks.
async fn wait_children(w: &World, set: &str, count: usize, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while children(w, set).await.len() != count {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_hooks(
    w: &World,
    what: &str,
    check: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let hooks = hooked(w).await;
        if check(&hooks) {
            return hooks;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; {} hooks",
            hooks.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_selector_keeps_one_hook_per_repository_as_the_workspace_changes() {
    let w = World::new("set-cloud", Flavor::Cloud).await;
    w.apply(&bulk_connection(&w).await).expect("connection");
    let selected: Vec<String> = (0..120).map(|i| format!("acme/svc-{i:03}")).collect();
    let legacy: Vec<String> = (0..3).map(|i| format!("acme/svc-{i}-legacy")).collect();
    let edge: Vec<String> = (0..5).map(|i| format!("acme/edge-{i}")).collect();
    w.ctl
        .repositories("Cloud", &selected, Some("CORE"), &[ADMIN, BULK])
        .await
        .expect("repositories");
    w.ctl
        .repositories("Cloud", &legacy, Some("CORE"), &[ADMIN, BULK])
        .await
        .expect("repositories");
    w.ctl
        .repositories("Cloud", &edge, Some("EDGE"), &[ADMIN, BULK])
        .await
        .expect("repositories");
    w.ctl.reset_requests().await.expect("reset");
    let set = "ci";
    let manifest = |exclude: &str| {
        format!(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {{name: {set}}}\nspec:\n  \
             connectionRef: {{name: bulk}}\n  discoveryInterval: 15s\n  \
             selector: {{workspace: acme, project: CORE, exclude: [{exclude}]}}\n  \
             template:\n    metadata: {{labels: {{team: ci}}}}\n    \
             spec: {{url: \"https://ci.example.com/hook\", events: [\"repo:push\"]}}\n"
        )
    };
    w.apply(&manifest("\"*-legacy\"")).expect("apply the set");
    wait_set(&w, set, "120 Ready", Duration::from_secs(120), |s| {
        ready_with(s, 120)
    })
    .await;
    let hooks = hooked(&w).await;
    let mut expected: Vec<(String, String)> = selected
        .iter()
        .map(|r| (r.clone(), "https://ci.example.com/hook".to_owned()))
        .collect();
    expected.sort();
    assert_eq!(
        hooks, expected,
        "one hook on each selected repository, none elsewhere"
    );
    let listings = w
        .ctl
        .count_where(|m, route| m == "GET" && route == "/2.0/repositories/{workspace}")
        .await
        .unwrap_or(0);
    assert!(
        (1..=2).contains(&listings),
        "one paged listing per discovery (two pages of 100 are 2 requests): {listings}"
    );
    let made = children(&w, set).await;
    assert_eq!(made.len(), 120);
    assert!(
        made.iter()
            .all(|c| c.labels().get("team").map(String::as_str) == Some("ci"))
    );
    assert!(
        made.iter()
            .all(|c| c.annotations().contains_key(REPOSITORY_ANNOTATION))
    );

    // A repository created on Bitbucket gets its hook within one discovery interval.
    w.ctl
        .repositories(
            "Cloud",
            &["acme/svc-new".to_owned()],
            Some("CORE"),
            &[ADMIN, BULK],
        )
        .await
        .expect("repository");
    wait_hooks(&w, "a hook on the new repository", |h| {
        h.iter().any(|(r, _)| r == "acme/svc-new")
    })
    .await;
    wait_set(&w, set, "121 Ready", Duration::from_secs(60), |s| {
        ready_with(s, 121)
    })
    .await;

    // Ten repositories leave the selection: their Webhooks and hooks go (deletionPolicy Delete).
    w.apply(&manifest("\"*-legacy\", \"svc-00?\""))
        .expect("narrow the selector");
    let hooks = wait_hooks(&w, "111 hooks", |h| h.len() == 111).await;
    assert!(!hooks.iter().any(|(r, _)| r.starts_with("acme/svc-00")));
    wait_set(&w, set, "111 Ready", Duration::from_secs(60), |s| {
        ready_with(s, 111)
    })
    .await;

    // A Webhook edited by hand is put back; one deleted by hand is made again.
    let victim = children(&w, set).await.remove(0);
    let name = victim.name_any();
    w.kubectl(&[
        "patch",
        "webhook",
        &name,
        "--type=merge",
        "-p",
        r#"{"spec":{"url":"https://hand.example.com/edit","title":"by hand"}}"#,
    ])
    .expect("edit by hand");
    w.wait_webhook(&name, "the template's url again", |c| {
        c.spec.settings.url == "https://ci.example.com/hook" && c.spec.settings.title.is_none()
    })
    .await;
    let other = children(&w, set).await.remove(1);
    let other_name = other.name_any();
    let other_uid = other.uid();
    w.kubectl(&["delete", "webhook", &other_name, "--wait=false"])
        .expect("delete by hand");
    w.wait_webhook(&other_name, "made again", |c| c.uid() != other_uid)
        .await;
    wait_set(&w, set, "111 Ready", Duration::from_secs(60), |s| {
        ready_with(s, 111)
    })
    .await;
    wait_hooks(&w, "every hook at the template's url", |h| {
        h.len() == 111 && h.iter().all(|(_, u)| u == "https://ci.example.com/hook")
    })
    .await;

    // Deleting the set deletes its Webhooks (garbage collection) and so every hook.
    w.kubectl(&["delete", "webhookset", set, "--wait=false"])
        .expect("delete the set");
    wait_hooks(&w, "no hook left", <[_]>::is_empty).await;
    wait_children(
        &w,
        set,
        0,
        Duration::from_secs(60),
        "the set's Webhooks collected",
    )
    .await;
}

#[tokio::test]
async fn an_explicit_list_with_the_orphan_policy_keeps_the_hooks_it_lets_go() {
    let w = World::new("set-dc", Flavor::DataCenter).await;
    let repos: Vec<String> = ["PLAT/a", "PLAT/b", "PLAT/c"].map(String::from).to_vec();
    w.ctl
        .repositories("DataCenter", &repos, None, &[ADMIN])
        .await
        .expect("repositories");
    let manifest = |list: &str| {
        format!(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {{name: keep}}\nspec:\n  \
             connectionRef: {{name: bitbucket}}\n  repositories: [{list}]\n  \
             template:\n    spec: {{url: \"https://ci.example.com/dc\", deletionPolicy: Orphan}}\n"
        )
    };
    w.apply(&manifest("PLAT/a, PLAT/b, PLAT/c")).expect("apply");
    wait_set(&w, "keep", "3 Ready", Duration::from_secs(60), |s| {
        ready_with(s, 3)
    })
    .await;
    assert_eq!(hooked(&w).await.len(), 3);
    w.apply(&manifest("PLAT/a, PLAT/b")).expect("shorter list");
    wait_set(&w, "keep", "2 Ready", Duration::from_secs(60), |s| {
        ready_with(s, 2)
    })
    .await;
    wait_children(
        &w,
        "keep",
        2,
        Duration::from_secs(30),
        "the dropped repository's Webhook gone",
    )
    .await;
    assert_eq!(
        hooked(&w).await.len(),
        3,
        "Orphan: the dropped repository keeps its hook"
    );
    w.kubectl(&["delete", "webhookset", "keep", "--wait=false"])
        .expect("delete");
    wait_children(
        &w,
        "keep",
        0,
        Duration::from_secs(60),
        "the set's Webhooks collected",
    )
    .await;
    assert_eq!(hooked(&w).await.len(), 3, "Orphan: every hook stays");
}

#[tokio::test]
async fn selectors_that_cannot_work_say_why() {
    let dc = World::new("set-bad-dc", Flavor::DataCenter).await;
    dc.apply(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {name: wrong}\nspec:\n  \
         connectionRef: {name: bitbucket}\n  selector: {workspace: acme}\n  \
         template: {spec: {url: \"https://ci.example.com/x\"}}\n",
    )
    .expect("apply");
    let s = wait_set(&dc, "wrong", "Stalled", Duration::from_secs(60), |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        })
    })
    .await;
    let ready = s
        .status
        .iter()
        .flat_map(|st| &st.conditions)
        .find(|c| c.type_ == "Ready")
        .cloned()
        .expect("Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("selector.project"),
        "{}",
        ready.message
    );

    let cloud = World::new("set-bad-cloud", Flavor::Cloud).await;
    cloud
        .apply(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {name: nowhere}\nspec:\n  \
             connectionRef: {name: bitbucket}\n  selector: {workspace: nowhere}\n  \
             template: {spec: {url: \"https://ci.example.com/x\"}}\n",
        )
        .expect("apply");
    wait_set(
        &cloud,
        "nowhere",
        "RepositoryNotFound",
        Duration::from_secs(60),
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.reason == "RepositoryNotFound"
                        && c.message.contains("workspace nowhere")
                })
            })
        },
    )
    .await;
    // Both or neither of repositories and selector: refused by the API server.
    let err = cloud
        .apply(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {name: both}\nspec:\n  \
             connectionRef: {name: bitbucket}\n  repositories: [acme/api]\n  selector: {workspace: acme}\n  \
             template: {spec: {url: \"https://ci.example.com/x\"}}\n",
        )
        .expect_err("refused");
    assert!(err.contains("exactly one of repositories"), "{err}");
}

/// The simulator's hooks at the owner level (project, workspace) of `owner`.
async fn owner_hooks(w: &World, owner: &str) -> Vec<serde_json::Value> {
    w.ctl
        .hooks()
        .await
        .expect("hooks")
        .into_iter()
        .filter(|h| h["scope"] == "owner" && h["repository"].as_str() == Some(owner))
        .collect()
}

#[tokio::test]
async fn project_and_workspace_webhooks_per_backend_and_the_inherited_duplicate() {
    for flavor in [Flavor::Cloud, Flavor::DataCenter, Flavor::PostWebhooks] {
        let name = support::flavor_name(flavor).to_ascii_lowercase();
        let w = World::new(&format!("scope-{name}"), flavor).await;
        let (owner, scope, wrong) = match flavor {
            Flavor::Cloud => ("acme", "Workspace", "Project"),
            _ => ("PLAT", "Project", "Workspace"),
        };
        // The connection's user administers the workspace / project.
        w.ctl
            .owner_admins(support::flavor_name(flavor), &w.repository, &[ADMIN])
            .await
            .expect("owner admin");
        let receiver = bitbucket_sim::receiver::Receiver::start(false)
            .await
            .expect("receiver");
        let url = receiver.url();
        let above = w
            .webhook_yaml("team", &url, &format!("  scope: {scope}\n"))
            .replace(
                &format!("repository: {}", w.repository),
                &format!("repository: {owner}"),
            );
        w.apply(&above).expect("apply");
        let team = w.wait_ready("team").await;
        let status = team.status.expect("status");
        let hooks = owner_hooks(&w, owner).await;
        assert_eq!(hooks.len(), 1, "{flavor:?}: {hooks:?}");
        assert_eq!(
            hooks[0]["id"].as_str(),
            status.webhook_id.as_deref(),
            "{flavor:?}"
        );
        assert!(w.hooks().await.is_empty(), "{flavor:?}: no repository hook");
        // An event of the repository below reaches the hook above it.
        w.ctl
            .emit(&w.repository, w.events()[0])
            .await
            .expect("emit");
        assert_eq!(receiver.received().len(), 1, "{flavor:?}: delivered once");

        // A repository Webhook with the same URL: each event would arrive twice.
        w.apply(&w.webhook_yaml("dup", &url, "")).expect("apply");
        let dup = w
            .wait_condition("dup", "DuplicateDeliveries", "True", "InheritedDuplicate")
            .await;
        let conditions = dup.status.expect("status").conditions;
        let duplicate = conditions
            .iter()
            .find(|c| c.type_ == "DuplicateDeliveries")
            .expect("condition");
        assert!(
            duplicate.message.contains(&format!(
                "{} {owner} has hook {}",
                scope.to_ascii_lowercase(),
                status.webhook_id.as_deref().unwrap_or_default()
            )),
            "{flavor:?}: {}",
            duplicate.message
        );
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{flavor:?}: the hook is what the spec asks, so Ready stays True"
        );
        assert!(
            w.event_names("InheritedDuplicate").contains("dup"),
            "{flavor:?}: a Warning Event"
        );
        // Another URL on the repository is no duplicate.
        w.apply(&w.webhook_yaml("other", "https://ci.example.com/other", ""))
            .expect("apply");
        let other = w.wait_ready("other").await;
        assert!(
            other
                .status
                .expect("status")
                .conditions
                .iter()
                .all(|c| c.type_ != "DuplicateDeliveries"),
            "{flavor:?}"
        );

        // The level the flavor does not have stalls with a sentence.
        let nowhere = w
            .webhook_yaml(
                "nowhere",
                "https://ci.example.com/n",
                &format!("  scope: {wrong}\n"),
            )
            .replace(
                &format!("repository: {}", w.repository),
                &format!("repository: {owner}"),
            );
        w.apply(&nowhere).expect("apply");
        let stalled = w
            .wait_condition("nowhere", "Stalled", "True", "InvalidSpec")
            .await;
        let ready = stalled
            .status
            .expect("status")
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert!(
            ready.message.contains("no project webhooks")
                || ready.message.contains("no workspaces"),
            "{flavor:?}: {}",
            ready.message
        );

        // Deleting the Webhooks removes their hooks, at both levels.
        w.kubectl(&[
            "delete",
            "webhook",
            "team",
            "dup",
            "other",
            "nowhere",
            "--wait=false",
        ])
        .expect("delete");
        for gone in ["team", "dup", "other", "nowhere"] {
            w.wait_gone(gone).await;
        }
        assert!(owner_hooks(&w, owner).await.is_empty(), "{flavor:?}");
        assert!(w.hooks().await.is_empty(), "{flavor:?}");
    }
}

#[tokio::test]
async fn exported_hooks_are_adopted_with_their_ids_and_no_write() {
    use bitbucket_webhook_operator::bitbucket::{HookSpec, Place, RepoRef, SecretChange};
    let w = World::new("export", Flavor::DataCenter).await;
    w.ctl
        .owner_admins("DataCenter", &w.repository, &[ADMIN])
        .await
        .expect("project admin");
    let repos: Vec<String> = (0..10).map(|i| format!("PLAT/svc-{i:02}")).collect();
    w.ctl
        .repositories("DataCenter", &repos, None, &[ADMIN])
        .await
        .expect("repositories");
    let client = support::admin_client(Flavor::DataCenter, &w.base_url());
    // Thirty hooks made by hand (three per repository, one of them signed and one
    // inactive), and one on the project.
    let mut made = std::collections::BTreeMap::new();
    for repo in &repos {
        let place = Place::Repository(RepoRef::parse(repo).expect("repo"));
        for (i, events) in [
            vec!["repo:refs_changed"],
            vec!["pr:opened", "pr:merged"],
            vec!["repo:refs_changed", "pr:opened"],
        ]
        .into_iter()
        .enumerate()
        {
            let spec = HookSpec {
                title: format!("{repo} hook {i}"),
                url: format!("https://ci.example.com/{repo}/{i}"),
                active: i != 1,
                events: events.into_iter().map(str::to_owned).collect(),
                secret: if i == 2 {
                    SecretChange::Set("s3cret".to_owned().into())
                } else {
                    SecretChange::Remove
                },
                skip_cert_verification: false,
            };
            let hook = client.create_hook(&place, &spec).await.expect("create");
            made.insert(spec.url, hook.id);
        }
    }
    let project = Place::Project("PLAT".into());
    let spec = HookSpec {
        title: "every repository".into(),
        url: "https://ci.example.com/plat".into(),
        active: true,
        events: vec!["repo:refs_changed".into()],
        secret: SecretChange::Remove,
        skip_cert_verification: false,
    };
    let hook = client.create_hook(&project, &spec).await.expect("create");
    made.insert(spec.url, hook.id);

    // Off the test's thread: the simulator runs on this runtime.
    let export = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"))
            .args(["export", "--flavor", "DataCenter", "--base-url"])
            .arg(w.base_url())
            .args(["--project", "PLAT", "--connection", "bitbucket"])
            .env("BITBUCKET_TOKEN", ADMIN)
            .output()
            .await
            .expect("export runs")
    };
    let out = export().await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[12/12] project PLAT: 1 hooks"),
        "progress: {stderr}"
    );
    assert!(stderr.contains("create Secret webhook-secret"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "a secret is never printed");
    let manifests = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!manifests.contains("s3cret"), "a secret is never printed");
    assert_eq!(
        manifests.matches("kind: Webhook").count(),
        31,
        "{manifests}"
    );
    assert_eq!(
        String::from_utf8_lossy(&export().await.stdout),
        manifests,
        "the same hooks export the same way"
    );

    w.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: webhook-secret}\nstringData: {secret: s3cret}\n",
    )
    .expect("secret");
    w.ctl.reset_requests().await.expect("reset");
    w.apply(&manifests).expect("apply the export");
    let deadline = Instant::now() + Duration::from_secs(90);
    let adopted = loop {
        let all = w
            .webhooks()
            .list(&ListParams::default())
            .await
            .expect("list");
        let ready: Vec<Webhook> = all.items.into_iter().filter(is_ready).collect();
        if ready.len() == 31 {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 31 exported Webhooks Ready",
            ready.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for h in &adopted {
        let status = h.status.as_ref().expect("status");
        assert_eq!(
            status.webhook_id.as_ref(),
            made.get(&h.spec.settings.url),
            "{}: the same hook",
            h.name_any()
        );
        assert_eq!(
            status.origin,
            Some(bitbucket_webhook_operator::api::HookOrigin::Adopted),
            "{}",
            h.name_any()
        );
    }
    assert_eq!(w.writes().await, 0, "adoption wrote nothing to Bitbucket");
}
