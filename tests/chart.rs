//! The Helm chart on a real control plane: rendered in each RBAC mode, applied with a
//! server-side dry run and then for real; the operator running as the chart's
//! ServiceAccount does its whole job and may not read Secrets elsewhere.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bitbucket_webhook_operator::api::Flavor;
use bitbucket_webhook_operator::reconcile::Config;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::helm::{apply, chart, documents, helm, one, render};
use support::{World, plane};

/// `make helm` builds helm knowing the Kubernetes version of its client libraries, so a
/// chart that requires a recent Kubernetes renders without a cluster and without
/// `--kube-version` (a stock `go build` of helm assumes 1.20 and refuses it).
#[test]
fn helm_template_renders_offline_without_a_kube_version() {
    let out = Command::new(helm())
        .args(["template", "x"])
        .arg(chart())
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: Deployment"));
}

#[test]
fn helm_lint_passes_in_each_mode() {
    for sets in [
        vec![],
        vec!["rbac.scope=namespaced"],
        vec![
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "podDisruptionBudget.enabled=true",
            "replicaCount=2",
            "grafanaDashboard.enabled=true",
        ],
        vec!["prometheusRule.enabled=true", "metrics.perWebhook=false"],
    ] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart());
        for set in &sets {
            cmd.args(["--set", set]);
        }
        let out = cmd.output().expect("helm runs");
        assert!(
            out.status.success(),
            "{sets:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // values.schema.json refuses nonsense.
    let out = Command::new(helm())
        .args(["template", "x"])
        .arg(chart())
        .args([
            "--kube-version",
            "v1.37.2",
            "--set",
            "rbac.scope=everywhere",
        ])
        .output()
        .expect("helm runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/rbac/scope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// urlFrom's read access is granted only when asked for, read-only, with the flag that
/// makes the operator watch Receivers.
#[test]
fn url_sources_are_granted_only_when_asked_for_and_read_only() {
    let rules_and_args = |sets: &[&str]| {
        let docs = documents(&render("x", "ops", sets));
        let rules = docs
            .iter()
            .find(|d| {
                d["kind"] == "ClusterRole"
                    && d["metadata"]["name"] == "x-bitbucket-webhook-operator"
            })
            .map(|role| role["rules"].clone())
            .expect("the operator's ClusterRole");
        let args = one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
        (rules, args)
    };
    let granted = |rules: &serde_json::Value, resource: &str| {
        rules
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
            })
            .map(|r| r["verbs"].clone())
    };
    let (rules, args) = rules_and_args(&[]);
    assert_eq!(granted(&rules, "receivers"), None);
    assert_eq!(granted(&rules, "configmaps"), None);
    assert!(!args.contains("--watch-flux-receivers"), "{args}");
    let (rules, args) = rules_and_args(&["urlFrom.fluxReceivers=true", "urlFrom.configMaps=true"]);
    assert_eq!(
        granted(&rules, "receivers"),
        Some(serde_json::json!(["get", "list", "watch"]))
    );
    assert_eq!(
        granted(&rules, "configmaps"),
        Some(serde_json::json!(["get"]))
    );
    assert!(args.contains("--watch-flux-receivers"), "{args}");
}

#[test]
fn the_chart_applies_in_each_mode() {
    let p = plane();
    for (mode, sets) in [
        ("cluster", vec![]),
        ("namespaced", vec!["rbac.scope=namespaced"]),
    ] {
        let ns = p.namespace(&format!("chart-{mode}")).expect("namespace");
        let release = format!("r-{ns}");
        let manifests = render(&release, &ns, &sets);
        for must in [
            "kind: Deployment",
            "kind: ServiceAccount",
            "kind: Service",
            "helm.sh/resource-policy: keep",
            "argocd.argoproj.io/sync-options: Prune=false,Delete=false",
        ] {
            assert!(manifests.contains(must), "{mode}: {must} missing");
        }
        assert!(
            manifests.contains("readOnlyRootFilesystem: true")
                && manifests.contains("runAsNonRoot: true")
        );
        assert!(manifests.contains("type: RuntimeDefault") && manifests.contains("- ALL"));
        assert!(
            !manifests.contains("runAsUser"),
            "no fixed UID (OpenShift assigns its own)"
        );
        let role = if mode == "cluster" {
            "kind: ClusterRole"
        } else {
            "kind: Role"
        };
        assert!(manifests.contains(role), "{mode}: {role}");
        apply(&manifests, true);
        let applied = apply(&manifests, false);
        assert!(
            applied.contains(&format!(
                "deployment.apps/{release}-bitbucket-webhook-operator serverside-applied"
            )),
            "{applied}"
        );
    }
}

#[tokio::test]
async fn the_operator_works_as_the_charts_service_account_and_no_further() {
    let w = World::standalone("chart-identity", Flavor::DataCenter).await;
    let release = format!("id-{}", w.ns);
    apply(
        &render(
            &release,
            &w.ns,
            &["rbac.scope=namespaced", "installCRDs=false"],
        ),
        false,
    );

    // The operator, impersonating the chart's ServiceAccount, watching only its namespace.
    let sa = format!(
        "system:serviceaccount:{}:{release}-bitbucket-webhook-operator",
        w.ns
    );
    let kubeconfig = kube::config::Kubeconfig::read_from(w.plane.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some(sa.clone());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{}", w.ns),
    ]);
    let as_operator = kube::Client::try_from(config).expect("client");
    let operator_config = Config {
        resync_period: support::RESYNC,
        list_ttl: support::RESYNC.mul_f64(0.9),
        health_period: support::HEALTH,
        namespaces: vec![w.ns.clone()],
        cluster_connections: false,
        // The simulator is on loopback.
        namespaced_private_targets: true,
        // The chart's Lease permissions are part of what is tested.
        leader_election: Some(bitbucket_webhook_operator::reconcile::LeaderElection {
            namespace: w.ns.clone(),
            lease: format!("{release}-bitbucket-webhook-operator"),
            identity: "chart-test".to_owned(),
            duration_seconds: 10,
        }),
        ..Config::default()
    };
    let client = as_operator.clone();
    let operator = tokio::spawn(async move {
        let result = bitbucket_webhook_operator::runtime::run_elected(
            client,
            operator_config,
            Arc::new(bitbucket_webhook_operator::metrics::Metrics::new()),
            Arc::new(AtomicBool::new(false)),
            std::future::pending(),
        )
        .await;
        panic!("the operator stopped: {result:?}");
    });

    w.apply(&w.webhook_yaml(
        "ci",
        "https://ci.example.com/x",
        "  secretRef: {name: made, generate: true}\n",
    ))
    .expect("apply");
    w.wait_ready("ci").await;
    assert_eq!(
        w.hooks().await.len(),
        1,
        "the hook was created under the ServiceAccount's rights"
    );
    w.kubectl(&["delete", "webhook", "ci", "--wait=false"])
        .expect("delete");
    w.wait_gone("ci").await;
    assert!(w.hooks().await.is_empty());

    // A Secret elsewhere is out of reach.
    let other = w.plane.namespace("chart-other").expect("namespace");
    w.plane
        .kubectl_stdin(
            ["apply", "-n", &other, "-f", "-"],
            "apiVersion: v1\nkind: Secret\nmetadata: {name: unrelated}\nstringData: {token: x}\n",
        )
        .expect("secret");
    let err = Api::<Secret>::namespaced(as_operator.clone(), &other)
        .get("unrelated")
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    let err = Api::<Secret>::all(as_operator)
        .list(&Default::default())
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    operator.abort();
}

#[tokio::test]
async fn a_label_selector_shards_the_work() {
    let w = World::standalone("selector", Flavor::Cloud).await;
    let config = Config {
        resync_period: support::RESYNC,
        list_ttl: support::RESYNC.mul_f64(0.9),
        namespaces: vec![w.ns.clone()],
        selector: Some("shard=a".to_owned()),
        cluster_connections: false,
        // The simulator is on loopback.
        namespaced_private_targets: true,
        ..Config::default()
    };
    let client = w.client.clone();
    let operator = tokio::spawn(async move {
        bitbucket_webhook_operator::runtime::run(
            client,
            config,
            Arc::new(bitbucket_webhook_operator::metrics::Metrics::new()),
            Arc::new(AtomicBool::new(false)),
            std::future::pending(),
        )
        .await;
    });
    let labelled = |yaml: String, name: &str| {
        yaml.replace(
            &format!("metadata: {{name: {name}}}"),
            &format!("metadata: {{name: {name}, labels: {{shard: a}}}}"),
        )
    };
    w.kubectl(&["label", "bbconn", "bitbucket", "shard=a"])
        .expect("label the connection");
    w.apply(&labelled(
        w.webhook_yaml("mine", "https://ci.example.com/mine", ""),
        "mine",
    ))
    .expect("apply");
    w.apply(&w.webhook_yaml("theirs", "https://ci.example.com/theirs", ""))
        .expect("apply");
    w.wait_ready("mine").await;
    tokio::time::sleep(support::RESYNC).await;
    let theirs = w.webhooks().get("theirs").await.expect("get");
    assert!(
        theirs.status.is_none(),
        "another shard's Webhook is left alone: {:?}",
        theirs.status
    );
    assert!(theirs.metadata.finalizers.unwrap_or_default().is_empty());
    let hooks = w.hooks().await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["url"], "https://ci.example.com/mine");
    operator.abort();
}

#[tokio::test]
async fn several_namespaces_are_watched_and_no_other() {
    let a = World::standalone("multi-a", Flavor::DataCenter).await;
    let b = World::standalone("multi-b", Flavor::DataCenter).await;
    let other = World::standalone("multi-other", Flavor::DataCenter).await;
    let config = Config {
        resync_period: support::RESYNC,
        list_ttl: support::RESYNC.mul_f64(0.9),
        namespaces: vec![a.ns.clone(), b.ns.clone()],
        cluster_connections: false,
        // The simulator is on loopback.
        namespaced_private_targets: true,
        ..Config::default()
    };
    let ready = Arc::new(AtomicBool::new(false));
    let client = a.client.clone();
    let synced = ready.clone();
    let operator = tokio::spawn(async move {
        bitbucket_webhook_operator::runtime::run(
            client,
            config,
            Arc::new(bitbucket_webhook_operator::metrics::Metrics::new()),
            synced,
            std::future::pending(),
        )
        .await;
    });
    for w in [&a, &b, &other] {
        w.apply(&w.webhook_yaml("ci", "https://ci.example.com/x", ""))
            .expect("apply");
    }
    a.wait_ready("ci").await;
    b.wait_ready("ci").await;
    assert!(
        ready.load(std::sync::atomic::Ordering::Relaxed),
        "ready once both namespaces synced"
    );
    tokio::time::sleep(support::RESYNC).await;
    let untouched = other.webhooks().get("ci").await.expect("get");
    assert!(
        untouched.status.is_none(),
        "a namespace outside --namespace is left alone"
    );
    assert!(other.hooks().await.is_empty());
    operator.abort();
}

/// A forward proxy for plain HTTP on loopback: records the request line of each
/// connection's first request and relays the connection to the host it names.
async fn start_proxy() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = client.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                // "GET http://127.0.0.1:PORT/path HTTP/1.1": absolute-form, as to a proxy.
                let Some(host) = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|uri| uri.strip_prefix("http://"))
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned)
                else {
                    return;
                };
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(host).await else {
                    return;
                };
                if upstream.write_all(&head[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, seen)
}

/// The README's proxy install: the operator sends its Bitbucket requests through the
/// proxy the environment names. Here, not beside a test binary's shared operator: that
/// one would serve the Webhook too (the simulator speaks plain HTTP, so HTTP_PROXY here;
/// HTTPS_PROXY for https:// Bitbucket).
#[tokio::test]
async fn bitbucket_requests_go_through_the_proxy_the_environment_names() {
    let w = World::standalone("chart-proxy", Flavor::DataCenter).await;
    let (proxy, seen) = start_proxy().await;
    let _operator = w
        .operator_command()
        .env("HTTP_PROXY", format!("http://{proxy}"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .spawn()
        .expect("operator starts");
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/x", ""))
        .expect("apply");
    w.wait_ready("ci").await;
    assert_eq!(w.hooks().await.len(), 1);
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let sim = w.sim.base_url();
    assert!(
        seen.iter()
            .any(|line| line.contains(&format!("{sim}/rest/api/"))),
        "Bitbucket requests reached the proxy: {seen:?}"
    );
}
