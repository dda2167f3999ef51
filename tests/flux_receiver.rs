//! Webhooks bound to Flux Receivers (`spec.urlFrom.receiverRef`), proven against the real
//! notification-controller: built from its Go module by `hack/build-flux.sh` (`make test`
//! passes its directory as BBWO_FLUX_DIR), run against the test control plane with its own
//! CRDs. A push fired through the simulator must be accepted by Flux (it verifies the
//! signature with the Receiver's token) and annotate the target; after the token is rotated
//! (and the Receiver reconciled, as `flux reconcile receiver` does), the next one too.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bitbucket_webhook_operator::api::Flavor;
use serde_json::Value;
use support::World;

/// A GitRepository-like target: Flux's kind and group, with any spec (the receiver only
/// annotates it; no source-controller runs here).
const GIT_REPOSITORY_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gitrepositories.source.toolkit.fluxcd.io}
spec:
  group: source.toolkit.fluxcd.io
  names: {kind: GitRepository, listKind: GitRepositoryList, plural: gitrepositories, singular: gitrepository}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

fn flux_dir() -> PathBuf {
    match std::env::var_os("BBWO_FLUX_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "BBWO_FLUX_DIR is not set: run `make test`, or set it to the directory `bash hack/build-flux.sh` prints"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Flux's CRDs and the target's, once per test binary.
fn install_crds(w: &World) {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let crds = flux_dir().join("crds");
        w.plane
            .kubectl_ok(["apply", "-f", crds.to_str().expect("path")])
            .expect("Flux's CRDs");
        let out = w
            .plane
            .kubectl_stdin(["apply", "-f", "-"], GIT_REPOSITORY_CRD)
            .expect("kubectl");
        assert!(out.status.success(), "the GitRepository CRD: {out:?}");
        w.plane
            .kubectl_ok([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/receivers.notification.toolkit.fluxcd.io",
                "crd/gitrepositories.source.toolkit.fluxcd.io",
            ])
            .expect("CRDs established");
    });
}

/// The notification-controller watching the test's namespace, and the operator (its own
/// process, watching Receivers); both killed when dropped.
struct Running {
    _flux: tokio::process::Child,
    _operator: tokio::process::Child,
    receiver_base: String,
}

async fn start(w: &World) -> Running {
    install_crds(w);
    let receiver_port = free_port();
    let logs = std::env::temp_dir();
    let log = |name: &str| {
        std::fs::File::create(logs.join(format!("{}-{name}.log", w.ns))).expect("log file")
    };
    let flux = tokio::process::Command::new(flux_dir().join("notification-controller"))
        .args([
            "--watch-all-namespaces=false",
            &format!("--receiverAddr=127.0.0.1:{receiver_port}"),
            &format!("--events-addr=127.0.0.1:{}", free_port()),
            &format!("--metrics-addr=127.0.0.1:{}", free_port()),
            &format!("--health-addr=127.0.0.1:{}", free_port()),
            "--enable-leader-election=false",
            "--log-level=debug",
        ])
        .env("KUBECONFIG", w.plane.kubeconfig())
        .env("RUNTIME_NAMESPACE", &w.ns)
        .stdout(log("flux-out"))
        .stderr(log("flux"))
        .kill_on_drop(true)
        .spawn()
        .expect("the notification-controller");
    let operator = w
        .operator_command()
        .args([
            "--watch-flux-receivers",
            "--resync-period=30s",
            &format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
        ])
        .env("BBWO_LOG_LEVEL", "debug")
        .stderr(log("operator"))
        .spawn()
        .expect("the operator");
    // The receiver answers once the controller runs.
    let receiver_base = format!("http://127.0.0.1:{receiver_port}");
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", receiver_port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the notification-controller's receiver did not listen within 60 s (log: {})",
            logs.join(format!("{}-flux.log", w.ns)).display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Running {
        _flux: flux,
        _operator: operator,
        receiver_base,
    }
}

fn receiver_yaml(type_: &str) -> String {
    format!(
        "apiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: bitbucket}}\n\
         spec:\n  type: {type_}\n  secretRef: {{name: flux-receiver-token}}\n  resources:\n  \
         - {{apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, name: app}}\n"
    )
}

fn token_yaml(token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: flux-receiver-token}}\nstringData: {{token: {token}}}\n"
    )
}

const TARGET: &str = "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: app}\nspec: {url: https://example.com/app.git}\n";

/// A `kubectl get -o jsonpath` value of `object` once it is set and not `not`, within
/// `within`.
async fn set_and_not(
    w: &World,
    object: [&str; 2],
    jsonpath: &str,
    not: &str,
    within: Duration,
) -> String {
    let started = std::time::Instant::now();
    loop {
        let value = w
            .kubectl(&[
                "get",
                object[0],
                object[1],
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
            .unwrap_or_default();
        if !value.is_empty() && value != not {
            return value;
        }
        assert!(
            started.elapsed() < within,
            "{} {} has no (new) {jsonpath}: {}",
            object[0],
            object[1],
            w.kubectl(&["get", object[0], object[1], "-o", "yaml"])
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Receiver's path once Ready and different from `not`.
async fn receiver_path(w: &World, not: &str) -> String {
    let path = "{.status.webhookPath}";
    set_and_not(
        w,
        ["receiver", "bitbucket"],
        path,
        not,
        Duration::from_secs(60),
    )
    .await
}

/// The simulator's one hook once it has `url` and (when given) `secret`.
async fn hook_with(w: &World, url: &str, secret: Option<&str>) -> Value {
    let started = std::time::Instant::now();
    loop {
        let hooks = w.hooks().await;
        if let [hook] = hooks.as_slice()
            && hook["url"] == url
            && secret.is_none_or(|s| hook["secret"] == s)
        {
            return hook.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no hook with {url} (and the rotated secret): {hooks:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The target's reconcile request annotation (Flux's answer to a delivery), once it is
/// set and not `not`.
async fn requested(w: &World, not: &str) -> String {
    let annotation = "{.metadata.annotations.reconcile\\.fluxcd\\.io/requestedAt}";
    set_and_not(
        w,
        ["gitrepository", "app"],
        annotation,
        not,
        Duration::from_secs(30),
    )
    .await
}

/// Fires the flavor's push and returns the HTTP status Flux's receiver answered.
async fn push(w: &World) -> Value {
    let [push, _] = w.events();
    let deliveries = w.ctl.emit(&w.repository, push).await.expect("emit");
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    deliveries[0]["statusCode"].clone()
}

/// examples/flux-receiver.yaml, pointed at this world (Cloud), or the same for `flavor`
/// with a Receiver of `type_`.
fn manifests(w: &World, base: &str, type_: &str) -> String {
    if w.flavor == Flavor::Cloud && type_ == "bitbucket" {
        let example = std::fs::read_to_string(support::repo_path("examples/flux-receiver.yaml"))
            .expect("examples/flux-receiver.yaml");
        return example
            .replace("replace-with-a-long-random-token", "first-token")
            .replace("acme-cloud", "bitbucket")
            .replace("acme/app", &w.repository)
            .replace("https://flux-webhook.example.com", base);
    }
    let [push_event, _] = w.events();
    format!(
        "{}---\n{}---\napiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: flux-push}}\nspec:\n  \
         connectionRef: {{name: bitbucket}}\n  repository: {}\n  events: [\"{push_event}\"]\n  \
         urlFrom:\n    receiverRef: {{name: bitbucket, baseURL: \"{base}\"}}\n",
        token_yaml("first-token"),
        receiver_yaml(type_),
        w.repository
    )
}

async fn push_to_reconcile(flavor: Flavor, type_: &str, signed: bool) {
    let w = World::standalone(&format!("flux-{}", type_), flavor).await;
    let flux = start(&w).await;
    w.apply(TARGET).expect("the target");
    w.apply(&manifests(&w, &flux.receiver_base, type_))
        .expect("token, Receiver, Webhook");
    let path = receiver_path(&w, "").await;
    w.wait_ready("flux-push").await;
    let secret = signed.then_some("first-token");
    hook_with(&w, &format!("{}{path}", flux.receiver_base), secret).await;
    assert_eq!(push(&w).await, 200, "Flux accepted the delivery");
    let first = requested(&w, "").await;

    // Rotate the token, then have Flux reconcile the Receiver (`flux reconcile receiver`):
    // the hook follows the token and then the new path.
    w.apply(&token_yaml("second-token")).expect("rotated token");
    let now = jiff::Timestamp::now().to_string();
    w.kubectl(&[
        "annotate",
        "--overwrite",
        "receiver",
        "bitbucket",
        &format!("{REQUESTED_AT}={now}"),
    ])
    .expect("reconcile the Receiver");
    let rotated = receiver_path(&w, &path).await;
    let secret = signed.then_some("second-token");
    hook_with(&w, &format!("{}{rotated}", flux.receiver_base), secret).await;
    assert_eq!(
        push(&w).await,
        200,
        "Flux accepted the delivery after the rotation"
    );
    requested(&w, &first).await;
    assert_eq!(
        w.hooks().await.len(),
        1,
        "the hook was updated, not duplicated"
    );
}

#[tokio::test]
async fn cloud_pushes_reconcile_through_a_bitbucket_receiver() {
    push_to_reconcile(Flavor::Cloud, "bitbucket", true).await;
}

#[tokio::test]
async fn data_center_pushes_reconcile_through_a_bitbucket_receiver() {
    push_to_reconcile(Flavor::DataCenter, "bitbucket", true).await;
}

#[tokio::test]
async fn post_webhooks_pushes_reconcile_through_a_generic_receiver() {
    push_to_reconcile(Flavor::PostWebhooks, "generic", false).await;
}

/// Waits until the Webhook's Synced condition is False with `wanted(reason, message)`.
async fn wait_synced(w: &World, name: &str, wanted: impl Fn(&str, &str) -> bool) {
    w.wait_webhook(name, "Synced=False with the expected reason", |webhook| {
        webhook
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .any(|c| c.type_ == "Synced" && c.status == "False" && wanted(&c.reason, &c.message))
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_unready_receiver_writes_nothing_and_says_so() {
    let w = World::standalone("flux-waits", Flavor::Cloud).await;
    let flux = start(&w).await;
    w.apply(&format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: waits}}\nspec:\n  \
         connectionRef: {{name: bitbucket}}\n  repository: {}\n  \
         urlFrom:\n    receiverRef: {{name: bitbucket, baseURL: \"{}\"}}\n",
        w.repository, flux.receiver_base
    ))
    .expect("Webhook");
    wait_synced(&w, "waits", |reason, message| {
        reason == "ReceiverNotReady" && message.contains("does not exist")
    })
    .await;
    // The Receiver exists, but its token Secret does not: Flux does not make it Ready.
    w.apply(&receiver_yaml("bitbucket")).expect("Receiver");
    wait_synced(&w, "waits", |reason, message| {
        reason == "ReceiverNotReady" && message.contains("not Ready")
    })
    .await;
    assert_eq!(w.writes().await, 0, "nothing was written to Bitbucket");
    // A Receiver type that cannot verify Bitbucket's deliveries is refused.
    w.apply(&format!(
        "{}---\n{}",
        token_yaml("t"),
        receiver_yaml("gitlab")
    ))
    .expect("Receiver");
    wait_synced(&w, "waits", |reason, message| {
        reason == "InvalidSpec" && message.contains("cannot verify")
    })
    .await;
    assert_eq!(w.writes().await, 0, "nothing was written to Bitbucket");
}

#[tokio::test]
async fn a_url_from_a_secret_or_a_config_map_is_followed() {
    let w = World::standalone("url-sources", Flavor::DataCenter).await;
    let _running = start(&w).await;
    let receiver = format!("{}/", w.sim.base_url());
    let secret_url = |path: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: hook-url}}\nstringData: {{url: \"{receiver}{path}\"}}\n"
        )
    };
    w.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: hook-urls}}\ndata: {{ci: \"{receiver}from-config-map\"}}\n",
        secret_url("from-secret")
    ))
    .expect("sources");
    for (name, source) in [
        ("from-secret", "secretKeyRef: {name: hook-url, key: url}"),
        (
            "from-config-map",
            "configMapKeyRef: {name: hook-urls, key: ci}",
        ),
    ] {
        w.apply(&format!(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\nspec:\n  \
             connectionRef: {{name: bitbucket}}\n  repository: {}\n  urlFrom: {{{source}}}\n",
            w.repository
        ))
        .expect("Webhook");
        w.wait_ready(name).await;
    }
    let urls = |hooks: Vec<Value>| {
        let mut urls: Vec<String> = hooks
            .iter()
            .filter_map(|h| h["url"].as_str().map(str::to_owned))
            .collect();
        urls.sort();
        urls
    };
    assert_eq!(
        urls(w.hooks().await),
        [
            format!("{receiver}from-config-map"),
            format!("{receiver}from-secret")
        ]
    );
    // A new value in the Secret reaches Bitbucket (the Secret is watched).
    w.apply(&secret_url("moved")).expect("Secret");
    let started = std::time::Instant::now();
    while !urls(w.hooks().await).contains(&format!("{receiver}moved")) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            urls(w.hooks().await)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.hooks().await.len(), 2, "updated, not duplicated");
    // A key that is not there: said, and nothing written.
    let writes = w.writes().await;
    w.apply(&format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: missing}}\nspec:\n  \
         connectionRef: {{name: bitbucket}}\n  repository: {}\n  urlFrom: {{configMapKeyRef: {{name: hook-urls, key: nope}}}}\n",
        w.repository
    ))
    .expect("Webhook");
    wait_synced(&w, "missing", |reason, message| {
        reason == "UrlSourceNotFound" && message.contains("hook-urls key \"nope\"")
    })
    .await;
    assert_eq!(w.writes().await, writes);
}
