//! Delivery health on a real control plane: Data Center statistics, the endpoint probe
//! (TLS verification, certificate expiry, the SSRF guard), on-demand test deliveries, the
//! secret lifecycle, and no secret ever in logs, events or status.

mod support;

use std::time::Duration;

use bitbucket_events::signature;
use bitbucket_sim::receiver::Receiver;
use bitbucket_webhook_operator::api::{DeliveryHealth, Flavor, Webhook};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::World;

fn health(w: &Webhook) -> Option<DeliveryHealth> {
    w.status
        .as_ref()
        .and_then(|s| s.delivery.as_ref())
        .map(|d| d.health)
}

fn delivering(w: &Webhook) -> (String, String, String) {
    w.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Delivering"))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

async fn wait_health(w: &World, name: &str, want: DeliveryHealth) -> Webhook {
    w.wait_webhook(name, &format!("health {want:?}"), |h| {
        health(h) == Some(want)
    })
    .await
}

/// A connection whose Webhooks are probed; `allow_private` lets the probe reach the
/// loopback receivers the tests use.
fn probing_connection(w: &World, name: &str, allow_private: bool) -> String {
    w.connection_yaml(name, support::ADMIN).replace(
        "  auth: {type: Bearer",
        &format!("  probe: {{enabled: true, intervalSeconds: 30}}\n  allowPrivateTargets: {allow_private}\n  auth: {{type: Bearer"),
    )
}

fn via(yaml: String, connection: &str) -> String {
    yaml.replace(
        "connectionRef: {name: bitbucket}",
        &format!("connectionRef: {{name: {connection}}}"),
    )
}

#[tokio::test]
async fn data_center_statistics_turn_failing_and_recover() {
    // Both reported shapes of a hook's statistics: one summary, or one per event.
    for shape in ["summary", "byEvent"] {
        statistics_turn_failing_and_recover(shape).await;
    }
}

async fn statistics_turn_failing_and_recover(shape: &str) {
    let w = World::new(
        &format!("dc-health-{}", shape.to_lowercase()),
        Flavor::DataCenter,
    )
    .await;
    w.ctl
        .variants(serde_json::json!({ "dcStatistics": shape }))
        .await
        .expect("variant");
    let receiver = Receiver::start(false).await.expect("receiver");
    w.apply(&w.webhook_yaml("chat", &receiver.url(), ""))
        .expect("apply");
    w.wait_ready("chat").await;
    let unknown = wait_health(&w, "chat", DeliveryHealth::Unknown).await;
    assert_eq!(delivering(&unknown).1, "NoDeliveries");

    w.ctl
        .emit(&w.repository, "repo:refs_changed")
        .await
        .expect("emit");
    let healthy = wait_health(&w, "chat", DeliveryHealth::Healthy).await;
    let delivery = healthy.status.and_then(|s| s.delivery).expect("delivery");
    assert_eq!(delivery.successes, Some(1));
    assert!(delivery.last_success_time.is_some());

    receiver.set_status(500);
    w.ctl.emit(&w.repository, "pr:opened").await.expect("emit");
    let failing = wait_health(&w, "chat", DeliveryHealth::Failing).await;
    let (status, reason, message) = delivering(&failing);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "DeliveriesFailing")
    );
    assert!(message.contains("500"), "{message}");
    let ready = failing
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready");
    assert_eq!(
        ready.status, "True",
        "a failing endpoint is not the operator's to fix: Ready stays, Delivering says it"
    );
    let delivery = failing.status.and_then(|s| s.delivery).expect("delivery");
    assert_eq!((delivery.successes, delivery.failures), (Some(1), Some(1)));
    assert!(
        delivery
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("FAILURE")),
        "{delivery:?}"
    );
    let events = w.event_names("DeliveriesFailing");
    assert!(
        !events.trim().is_empty(),
        "a Warning event when deliveries start failing"
    );

    receiver.set_status(200);
    w.ctl
        .emit(&w.repository, "repo:refs_changed")
        .await
        .expect("emit");
    w.ctl
        .emit(&w.repository, "repo:refs_changed")
        .await
        .expect("emit");
    let recovered = wait_health(&w, "chat", DeliveryHealth::Healthy).await;
    assert_eq!(delivering(&recovered).0, "True");
    w.wait_ready("chat").await;
    let statistics = w.ctl.count("GET", "/statistics").await.expect("count");
    assert_eq!(statistics, 0, "{shape}: statistics come with the listing");
}

#[tokio::test]
async fn the_test_annotation_sends_exactly_one_test_per_value() {
    let w = World::new("test-annotation", Flavor::DataCenter).await;
    let receiver = Receiver::start(false).await.expect("receiver");
    w.apply(&w.webhook_yaml("tested", &receiver.url(), ""))
        .expect("apply");
    w.wait_ready("tested").await;
    let tests = || async { w.ctl.count("POST", "/webhooks/test").await.unwrap_or(0) };
    assert_eq!(tests().await, 0);
    w.kubectl(&[
        "annotate",
        "webhook",
        "tested",
        "bitbucket.hooks.dev/test-requested=first",
    ])
    .expect("annotate");
    let done = w
        .wait_webhook("tested", "lastTest for first", |h| {
            h.status
                .as_ref()
                .and_then(|s| s.delivery.as_ref())
                .and_then(|d| d.last_test.as_ref())
                .is_some_and(|t| t.request == "first")
        })
        .await;
    let last = done
        .status
        .and_then(|s| s.delivery)
        .and_then(|d| d.last_test)
        .expect("lastTest");
    assert_eq!(last.status_code, Some(200), "{last:?}");
    // More reconciles (a resync, another annotation) do not repeat it.
    w.kubectl(&["annotate", "webhook", "tested", "unrelated=1"])
        .expect("annotate");
    tokio::time::sleep(support::RESYNC + Duration::from_secs(1)).await;
    assert_eq!(tests().await, 1, "one test call for one value");
    w.kubectl(&[
        "annotate",
        "--overwrite",
        "webhook",
        "tested",
        "bitbucket.hooks.dev/test-requested=second",
    ])
    .expect("annotate");
    w.wait_webhook("tested", "lastTest for second", |h| {
        h.status
            .as_ref()
            .and_then(|s| s.delivery.as_ref())
            .and_then(|d| d.last_test.as_ref())
            .is_some_and(|t| t.request == "second")
    })
    .await;
    assert_eq!(tests().await, 2);
    let pings = receiver
        .received()
        .iter()
        .filter(|r| r.header("X-Event-Key") == Some("diagnostics:ping"))
        .count();
    assert_eq!(pings, 2);
    // Repeated events of one reason form a series (events.k8s.io): one object, count 2.
    let count = w
        .kubectl(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "reason=TestDelivered",
            "-o",
            "jsonpath={.items[*].series.count}",
        ])
        .expect("events");
    assert_eq!(count.trim(), "2", "two TestDelivered events");
}

#[tokio::test]
async fn the_probe_checks_tls_verification_and_expiry() {
    let w = World::new("probe-tls", Flavor::Cloud).await;
    w.apply(&probing_connection(&w, "probing", true))
        .expect("connection");
    let self_signed = Receiver::start(true).await.expect("https receiver");
    w.apply(&via(
        w.webhook_yaml("strict", &self_signed.url(), ""),
        "probing",
    ))
    .expect("apply");
    let failing = wait_health(&w, "strict", DeliveryHealth::Failing).await;
    let (status, reason, _) = delivering(&failing);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CertificateRejected")
    );
    assert!(
        self_signed.received().is_empty(),
        "the TLS handshake failed before any request"
    );

    w.apply(&via(
        w.webhook_yaml(
            "strict",
            &self_signed.url(),
            "  skipCertVerification: true\n",
        ),
        "probing",
    ))
    .expect("apply");
    let healthy = wait_health(&w, "strict", DeliveryHealth::Healthy).await;
    let endpoint = healthy
        .status
        .and_then(|s| s.delivery)
        .and_then(|d| d.endpoint)
        .expect("endpoint");
    assert!(
        endpoint.reachable && endpoint.status_code == Some(200) && endpoint.latency_ms.is_some(),
        "{endpoint:?}"
    );
    assert!(endpoint.tls_expires_at.is_some());
    let ping = self_signed
        .received()
        .into_iter()
        .find(|r| r.header("X-Event-Key") == Some("diagnostics:ping"))
        .expect("a ping");
    assert!(
        ping.header("X-Hub-Signature").is_none(),
        "no secret, no signature"
    );
    let warnings = w.event_names("CertificateVerificationSkipped");
    assert!(!warnings.trim().is_empty());

    let expiring = Receiver::start_expiring(3)
        .await
        .expect("expiring receiver");
    w.apply(&via(
        w.webhook_yaml(
            "expiring",
            &expiring.url(),
            "  skipCertVerification: true\n",
        ),
        "probing",
    ))
    .expect("apply");
    let degraded = wait_health(&w, "expiring", DeliveryHealth::Degraded).await;
    let (_, reason, message) = delivering(&degraded);
    assert_eq!(reason, "CertificateExpiring");
    let expires = degraded
        .status
        .and_then(|s| s.delivery)
        .and_then(|d| d.endpoint)
        .and_then(|e| e.tls_expires_at)
        .expect("expiry");
    assert!(
        message.contains(&expires.0.to_string()),
        "{message} names {expires:?}"
    );
}

#[tokio::test]
async fn the_probe_refuses_private_targets_without_a_request() {
    let w = World::new("probe-ssrf", Flavor::Cloud).await;
    w.apply(&probing_connection(&w, "strict", false))
        .expect("connection");
    let receiver = Receiver::start(false).await.expect("receiver");
    w.apply(&via(
        w.webhook_yaml("internal", &receiver.url(), ""),
        "strict",
    ))
    .expect("apply");
    let refused = w
        .wait_webhook("internal", "a probe refusal", |h| {
            h.status
                .as_ref()
                .and_then(|s| s.delivery.as_ref())
                .and_then(|d| d.endpoint.as_ref())
                .is_some()
        })
        .await;
    let endpoint = refused
        .status
        .as_ref()
        .and_then(|s| s.delivery.as_ref())
        .and_then(|d| d.endpoint.clone())
        .expect("endpoint");
    assert!(!endpoint.reachable);
    assert!(
        endpoint
            .message
            .as_deref()
            .is_some_and(|m| m.contains("loopback") && m.contains("allowPrivateTargets")),
        "{endpoint:?}"
    );
    assert_eq!(delivering(&refused).1, "ProbeRefused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.received().is_empty(),
        "no request reached the private target"
    );
}

#[tokio::test]
async fn secrets_generated_signed_removed_and_never_shown() {
    let w = World::new("secret-life", Flavor::DataCenter).await;
    let receiver = Receiver::start(false).await.expect("receiver");
    w.apply(&w.webhook_yaml(
        "signed",
        &receiver.url(),
        "  secretRef: {name: generated-secret, generate: true}\n",
    ))
    .expect("apply");
    w.wait_ready("signed").await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    let secret = secrets
        .get("generated-secret")
        .await
        .expect("generated Secret");
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get("secret"))
        .map(|v| v.0.clone())
        .expect("secret key");
    assert_eq!(value.len(), 64, "32 random bytes, hex");
    w.ctl
        .emit(&w.repository, "repo:refs_changed")
        .await
        .expect("emit");
    let delivery = receiver.received().into_iter().next().expect("delivery");
    signature::verify(&value, &delivery.body, delivery.header("X-Hub-Signature"))
        .expect("signed with the generated secret");

    // Removing secretRef removes the secret on Bitbucket.
    w.apply(&w.webhook_yaml("signed", &receiver.url(), ""))
        .expect("apply without secretRef");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !w.hooks().await[0]["secret"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the secret was never removed from Bitbucket"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    w.kubectl(&[
        "annotate",
        "webhook",
        "signed",
        "bitbucket.hooks.dev/test-requested=1",
    ])
    .expect("annotate");
    w.wait_webhook("signed", "a test", |h| {
        h.status
            .as_ref()
            .and_then(|s| s.delivery.as_ref())
            .and_then(|d| d.last_test.as_ref())
            .is_some()
    })
    .await;
    w.kubectl(&["delete", "webhook", "signed", "--wait=false"])
        .expect("delete");
    w.wait_gone("signed").await;

    // Nothing the operator logged (at trace level), no Event and no status holds the
    // secret or a token.
    let secret_text = String::from_utf8(value).expect("hex");
    let events = w.kubectl(&["get", "events", "-o", "yaml"]).expect("events");
    let webhooks = w
        .kubectl(&["get", "webhooks,bitbucketconnections", "-o", "yaml"])
        .expect("objects");
    // One failing reconcile, so the error counter has a sample.
    w.apply(
        &w.webhook_yaml("broken", "https://ci.example.com/b", "")
            .replace("name: bitbucket}", "name: missing}"),
    )
    .expect("apply");
    w.wait_condition("broken", "Synced", "False", "ConnectionNotFound")
        .await;
    let base = support::metrics_url();
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("operator HTTP");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get("/readyz").await.0, 200, "ready once the watches synced");
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "bbwo_reconciles_total{kind=\"Webhook\",result=\"ok\"}",
        "bbwo_reconcile_duration_seconds_bucket{",
        "bbwo_bitbucket_requests_total{connection=",
        "bbwo_bitbucket_budget_remaining{connection=",
        "bbwo_webhooks{health=",
        "bbwo_webhooks_by_condition{condition=\"Ready\"",
        "bbwo_delivery_failures_seen_total",
        "bbwo_reconcile_errors_total{kind=\"Webhook\",reason=\"ConnectionNotFound\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let logs = support::logs();
    assert!(
        logs.len() > 10_000,
        "trace logs were captured ({} bytes)",
        logs.len()
    );
    for (what, text) in [
        ("logs", &logs),
        ("events", &events),
        ("objects", &webhooks),
        ("metrics", &metrics),
    ] {
        for needle in [secret_text.as_str(), support::ADMIN, support::READER] {
            assert!(
                !text.contains(needle),
                "{what} contain a secret or token ({needle})"
            );
        }
    }
}

#[tokio::test]
async fn readyz_waits_for_the_first_sync() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let addr = listener.local_addr().expect("addr");
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(bitbucket_webhook_operator::runtime::serve(
        listener,
        std::sync::Arc::new(bitbucket_webhook_operator::metrics::Metrics::new()),
        ready.clone(),
        None,
        std::future::pending(),
    ));
    let status = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(
        status("/readyz").await,
        503,
        "not ready before the watches synced"
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(status("/readyz").await, 200);
    assert_eq!(
        status("/debug/log-level").await,
        404,
        "no log control unless given one"
    );
    server.abort();
}
