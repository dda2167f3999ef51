//! Faults on the real control plane against the simulator, with the operator as its own
//! process (default retry policy and backoff): Bitbucket failing part of the time while
//! Webhooks are made, then answering again.

mod support;

use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::{BitbucketConnection, Flavor};
use kube::Api;
use serde_json::json;
use support::{ADMIN, World};

/// What an outage cost and how fast the Webhooks recovered.
struct Outage {
    requests: u64,
    lasted: Duration,
    recovered_in: Duration,
    ready: usize,
    said_unavailable: bool,
}

/// 60 Webhooks on 6 Cloud repositories applied while `rate` of the requests get a 503
/// for 40 s; then Bitbucket answers again. Waits up to 30 s for all to be Ready and
/// checks there is exactly one hook per Webhook.
async fn outage(test: &str, rate: f64) -> Outage {
    let w = World::standalone(test, Flavor::Cloud).await;
    let repositories: Vec<String> = std::iter::once(w.repository.clone())
        .chain((1..6).map(|i| format!("acme/repo-{i}")))
        .collect();
    w.ctl
        .repositories("Cloud", &repositories[1..], None, &[ADMIN])
        .await
        .expect("repositories");
    w.apply(
        &w.connection_yaml("bitbucket", ADMIN)
            .replace("  auth:", "  rateLimit: {requestsPerHour: 3600}\n  auth:"),
    )
    .expect("connection");
    let _operator = w
        .operator_command()
        .args(["--metrics-bind-address=127.0.0.1:0", "--log-level=warn"])
        .spawn()
        .expect("operator");
    w.wait_connection("bitbucket", "Ready", "True").await;
    w.ctl.reset_requests().await.expect("reset");
    w.ctl
        .faults(json!({ "errorRate": rate, "status": 503 }))
        .await
        .expect("faults");
    let started = Instant::now();
    let manifests: Vec<String> = (0..60)
        .map(|i| {
            w.webhook_yaml(
                &format!("hook-{i}"),
                &format!("https://ci.example.com/{i}"),
                "",
            )
            .replace(
                &format!("repository: {}", w.repository),
                &format!("repository: {}", repositories[i % 6]),
            )
        })
        .collect();
    w.apply(&manifests.join("---\n")).expect("apply");
    let connections: Api<BitbucketConnection> = Api::namespaced(w.client.clone(), &w.ns);
    let mut said_unavailable = false;
    while started.elapsed() < Duration::from_secs(40) {
        said_unavailable |= connections
            .get("bitbucket")
            .await
            .expect("connection")
            .status
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "BitbucketUnavailable")
            });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let requests = w.ctl.count_where(|_, _| true).await.expect("requests");
    let lasted = started.elapsed();
    w.ctl.clear_faults().await.expect("clear");
    let answering = Instant::now();
    let ready = loop {
        let list = w.webhooks().list(&Default::default()).await.expect("list");
        let ready = list
            .items
            .iter()
            .filter(|h| {
                h.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == 60 || answering.elapsed() > Duration::from_secs(30) {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let recovered_in = answering.elapsed();
    let hooks = w.ctl.hooks().await.expect("hooks");
    let mut urls: Vec<&str> = hooks.iter().filter_map(|h| h["url"].as_str()).collect();
    urls.sort();
    urls.dedup();
    assert_eq!(
        (hooks.len(), urls.len()),
        (ready, ready),
        "one hook per Ready Webhook, no duplicates"
    );
    Outage {
        requests,
        lasted,
        recovered_in,
        ready,
        said_unavailable,
    }
}

fn report(what: &str, o: &Outage) {
    println!(
        "{what}: {} requests in {:.0} s ({:.1}/s); {} of 60 Ready {:.1} s after Bitbucket answered again; BitbucketUnavailable shown: {}",
        o.requests,
        o.lasted.as_secs_f64(),
        o.requests as f64 / o.lasted.as_secs_f64(),
        o.ready,
        o.recovered_in.as_secs_f64(),
        o.said_unavailable
    );
}

/// 30% of requests fail for 40 s (a flaky Bitbucket): all 60 Ready within 30 s of it
/// answering again. The connection's budget is 3,600/h: at the default 900/h the burst
/// (90) is spent during the outage (66 requests of work, each failing 30% of the time)
/// and the rest goes at one request per 4.4 s, which no retry policy can beat.
#[tokio::test]
async fn after_a_flaky_spell_every_webhook_is_ready_within_thirty_seconds() {
    let o = outage("flaky", 0.3).await;
    report("30% 503s", &o);
    assert_eq!(o.ready, 60, "all Ready 30 s after Bitbucket answered again");
}

/// Every request fails for 40 s (Bitbucket down): the connection says so while it lasts,
/// the Webhooks back off (the request rate stays low), and when Bitbucket answers again
/// the ones waiting on it are retried at once instead of each sleeping out its backoff.
#[tokio::test]
async fn after_bitbucket_was_down_every_webhook_is_ready_within_thirty_seconds() {
    let o = outage("down", 1.0).await;
    report("all 503s", &o);
    assert!(
        o.said_unavailable,
        "the connection showed BitbucketUnavailable"
    );
    assert_eq!(o.ready, 60, "all Ready 30 s after Bitbucket answered again");
    assert!(
        o.requests as f64 / o.lasted.as_secs_f64() < 10.0,
        "the requests while Bitbucket is down stay few: {} in {:?}",
        o.requests,
        o.lasted
    );
}
