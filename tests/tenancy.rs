//! Operator processes of their own (no shared in-process operator in this binary, which
//! would watch every namespace): several watched namespaces sharing one cluster
//! connection, and the defaults of an operator started without test flags.

mod support;

use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::Flavor;
use kube::Api;
use support::World;

/// Two teams in two watched namespaces (`--namespace a --namespace b`), one
/// ClusterBitbucketConnection, the same repository and URL: the younger Webhook is a
/// Conflict and deleting it leaves the older one's hook alone.
#[tokio::test]
async fn two_namespaces_on_one_cluster_connection_never_share_a_hook() {
    use bitbucket_webhook_operator::api::Webhook;
    let w = World::standalone("tenant-a", Flavor::Cloud).await;
    let other = w.plane.namespace("tenant-b").expect("namespace");
    let name = format!("shared-{}", w.ns);
    for ns in [&w.ns, &other] {
        w.plane
            .kubectl_ok(["label", "namespace", ns, &format!("tenants={}", w.ns)])
            .expect("label");
    }
    // The cluster connection's Secret lives in the operator's namespace: here tenant-a.
    w.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{token: {}}}\n---\n\
         apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: ClusterBitbucketConnection\nmetadata: {{name: {name}}}\nspec:\n  \
         flavor: Cloud\n  baseURL: {}\n  auth: {{type: Bearer, secretRef: {{name: {name}}}}}\n  \
         allowedNamespaces: {{matchLabels: {{tenants: {}}}}}\n",
        support::ADMIN,
        w.base_url(),
        w.ns
    ))
    .expect("cluster connection");
    let _operator = w
        .bare_operator_command(&[
            "--namespace",
            &w.ns,
            "--namespace",
            &other,
            "--cluster-secret-namespace",
            &w.ns,
            "--metrics-bind-address=127.0.0.1:0",
            "--resync-period=4s",
            "--health-period=2s",
        ])
        .spawn()
        .expect("operator");
    let webhook = w
        .webhook_yaml("ci", "https://ci.example.com/shared", "")
        .replace(
            "connectionRef: {name: bitbucket}",
            &format!("connectionRef: {{kind: ClusterBitbucketConnection, name: {name}}}"),
        );
    w.apply(&webhook).expect("team a");
    w.wait_ready("ci").await;
    w.plane
        .kubectl_stdin(["apply", "-n", &other, "-f", "-"], &webhook)
        .expect("team b");
    let b: Api<Webhook> = Api::namespaced(w.client.clone(), &other);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let synced = b
            .get_opt("ci")
            .await
            .ok()
            .flatten()
            .and_then(|h| h.status)
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Synced"));
        if let Some(c) = &synced
            && c.reason == "Conflict"
        {
            assert!(c.message.contains(&format!("{}/ci", w.ns)), "{}", c.message);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Conflict for team b: {synced:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.hooks().await.len(), 1);
    w.plane
        .kubectl_ok(["delete", "-n", &other, "--wait=false", "webhook", "ci"])
        .expect("delete team b's");
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.get_opt("ci").await.ok().flatten().is_some() {
        assert!(Instant::now() < deadline, "team b's Webhook never went");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.hooks().await.len(), 1, "team a's hook is still there");
    w.wait_ready("ci").await;
}

/// Without `--namespaced-private-targets`, a namespaced connection may not aim the
/// operator at a loopback (private, cluster-internal) Bitbucket: it is refused with the
/// way out, and nothing is sent.
#[tokio::test]
async fn a_namespaced_connection_may_not_reach_private_addresses_by_default() {
    let w = World::standalone("private-base", Flavor::DataCenter).await;
    // Started as a user would: no test flags.
    let _operator = w
        .bare_operator_command(&[
            "--namespace",
            &w.ns,
            "--cluster-connections=false",
            "--metrics-bind-address=127.0.0.1:0",
        ])
        .spawn()
        .expect("operator");
    let (reason, message) = w.wait_connection("bitbucket", "Ready", "False").await;
    assert_eq!(reason, "NotAllowed");
    assert!(
        message.contains("loopback") && message.contains("--namespaced-private-targets"),
        "{message}"
    );
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/private", ""))
        .expect("apply");
    w.wait_condition("ci", "Stalled", "True", "NotAllowed")
        .await;
    let sent = w.ctl.count_where(|_, _| true).await.expect("requests");
    assert_eq!(sent, 0, "nothing reached the private address");
}

/// A reconcile that starts from a cached copy older than the object (the watch behind,
/// as at 10,000 Webhooks) reads the Webhook again instead of failing on the finalizer's
/// JSON-patch test and retrying from the same stale copy until the watch catches up.
#[tokio::test]
async fn a_reconcile_from_a_stale_copy_reads_the_webhook_again() {
    use std::sync::Arc;

    use bitbucket_webhook_operator::api::{FINALIZER, Webhook};
    use bitbucket_webhook_operator::metrics::Metrics;
    use bitbucket_webhook_operator::reconcile::{Config, Context, Shared, webhook};
    use kube::core::DeserializeGuard;
    use kube::runtime::events::{Recorder, Reporter};

    let w = World::standalone("stale-copy", Flavor::Cloud).await;
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/stale", ""))
        .expect("apply");
    let api: Api<Webhook> = Api::namespaced(w.client.clone(), &w.ns);
    let stale = api.get("ci").await.expect("get");
    assert!(stale.metadata.finalizers.is_none());
    // What an earlier reconcile did, which this copy has not seen.
    let patch = format!(r#"{{"metadata":{{"finalizers":["{FINALIZER}"]}}}}"#);
    w.plane
        .kubectl_ok([
            "-n",
            &w.ns,
            "patch",
            "webhook",
            "ci",
            "--type=merge",
            "-p",
            &patch,
        ])
        .expect("finalizer");

    let config = Config {
        namespaces: vec![w.ns.clone()],
        namespaced_private_targets: true,
        ..Config::default()
    };
    let shared = Shared::new(&config, Arc::new(Metrics::new()));
    let reporter = Reporter {
        controller: "stale-copy-test".to_owned(),
        instance: None,
    };
    let recorder = Recorder::new(w.client.clone(), reporter);
    let (store, _writer) = kube::runtime::reflector::store();
    let ctx = Arc::new(Context::new(
        w.client.clone(),
        recorder,
        config,
        store,
        &shared,
    ));
    let outcome = webhook::reconcile(Arc::new(DeserializeGuard(Ok(stale))), ctx).await;
    assert!(
        outcome.is_ok(),
        "the stale copy was not read again: {outcome:?}"
    );
    let fresh = api.get("ci").await.expect("get");
    assert_eq!(
        fresh.metadata.finalizers.unwrap_or_default(),
        [FINALIZER.to_owned()],
        "one finalizer, not two"
    );
    assert!(
        fresh.status.is_some_and(|s| !s.conditions.is_empty()),
        "the reconcile went on to write a status"
    );
}

/// A restarted operator trusts a current, recent status until the repository's resync
/// slot: the Webhooks cost no Bitbucket request (only the connection check does), and an
/// edit is still served at once.
#[tokio::test]
async fn a_restart_costs_no_bitbucket_calls_for_current_webhooks() {
    let w = World::standalone("restart-cost", Flavor::Cloud).await;
    let flags = [
        "--metrics-bind-address=127.0.0.1:0",
        // A day: no slot of the repository falls in the few seconds measured.
        "--resync-period=24h",
        "--health-period=24h",
    ];
    let mut operator = w.operator_command().args(flags).spawn().expect("operator");
    for i in 0..5 {
        w.apply(&w.webhook_yaml(
            &format!("ci-{i}"),
            &format!("https://ci.example.com/{i}"),
            "",
        ))
        .expect("apply");
    }
    for i in 0..5 {
        w.wait_ready(&format!("ci-{i}")).await;
    }
    // The pending-create mark goes right after the status: let the last one go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    operator.kill().await.expect("kill");
    w.ctl.reset_requests().await.expect("reset");

    let _operator = w.operator_command().args(flags).spawn().expect("operator");
    // Time for the new process to list every Webhook and reconcile each once.
    w.wait_connection("bitbucket", "Ready", "True").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = w.ctl.requests().await.expect("requests");
    let hook_requests: Vec<_> = requests
        .iter()
        .filter(|r| r["route"].as_str().is_some_and(|p| p.contains("hooks")))
        .collect();
    assert!(
        hook_requests.is_empty(),
        "a restart re-read current Webhooks: {hook_requests:?}"
    );

    // Still working: an edit reaches Bitbucket promptly.
    w.apply(&w.webhook_yaml("ci-0", "https://ci.example.com/0", "  active: false\n"))
        .expect("edit");
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.writes().await == 0 {
        assert!(
            Instant::now() < deadline,
            "the edit never reached Bitbucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM while a reconcile hangs on Bitbucket: the process exits within its shutdown
/// timeout instead of waiting for the request.
#[tokio::test]
async fn sigterm_while_busy_exits_within_the_shutdown_timeout() {
    let w = World::standalone("sigterm", Flavor::Cloud).await;
    let mut operator = w
        .operator_command()
        .args([
            "--metrics-bind-address=127.0.0.1:0",
            "--shutdown-timeout=2s",
        ])
        .spawn()
        .expect("operator");
    w.wait_connection("bitbucket", "Ready", "True").await;
    // Every hook request now takes a minute.
    w.ctl
        .faults(serde_json::json!({"latencyMs": 60_000, "routes": ["/2.0/repositories"]}))
        .await
        .expect("faults");
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/busy", ""))
        .expect("apply");
    // The simulator counts a request when it answers; give the reconcile time to be
    // waiting on one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = operator.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(15), operator.wait())
        .await
        .expect("the operator did not exit within 15 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "exit took {:?}",
        started.elapsed()
    );
}

/// Two shards over one control plane (`--selector shard=a` and `shard=b`, each with its
/// own labelled connection): every Webhook is served by exactly one of them, none twice
/// (one create each) and none missed (all Ready).
#[tokio::test]
async fn two_shards_serve_every_webhook_exactly_once() {
    let w = World::standalone("shards", Flavor::Cloud).await;
    let mut yaml = String::new();
    for shard in ["a", "b"] {
        yaml.push_str(
            &w.connection_yaml(&format!("bitbucket-{shard}"), support::ADMIN)
                .replace(
                    &format!("kind: BitbucketConnection\nmetadata: {{name: bitbucket-{shard}}}"),
                    &format!(
                        "kind: BitbucketConnection\nmetadata: {{name: bitbucket-{shard}, labels: {{shard: {shard}}}}}"
                    ),
                ),
        );
        yaml.push_str("---\n");
        for i in 0..6 {
            yaml.push_str(&format!(
                "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: {shard}-{i}, labels: {{shard: {shard}}}}}\n\
                 spec:\n  connectionRef: {{name: bitbucket-{shard}}}\n  repository: {}\n  url: https://ci.example.com/{shard}/{i}\n---\n",
                w.repository
            ));
        }
    }
    let _shards: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|shard| {
            w.operator_command()
                .args([
                    &format!("--selector=shard={shard}"),
                    "--metrics-bind-address=127.0.0.1:0",
                ])
                .spawn()
                .expect("operator")
        })
        .collect();
    w.apply(&yaml).expect("apply");
    for shard in ["a", "b"] {
        for i in 0..6 {
            w.wait_ready(&format!("{shard}-{i}")).await;
        }
    }
    assert_eq!(w.hooks().await.len(), 12, "one hook per Webhook");
    assert_eq!(w.writes().await, 12, "one create per Webhook, none twice");
}
