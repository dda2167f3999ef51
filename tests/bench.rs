//! `make bench`: the operator as a separate process against a real control plane and
//! `bitbucket-sim`, with many Webhooks. Measures time to Ready, Bitbucket requests (to
//! converge, and per resync and health period once converged: Data Center statistics come
//! with one listing per repository) and the operator's peak memory. Ignored by
//! `make test`; prints a Markdown table for docs/benchmarks.md.

mod support;

use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::Flavor;
use support::World;

const REPOSITORIES: usize = 20;
const PER_REPOSITORY: usize = 10;
const RESYNC_SECONDS: u64 = 10;
/// Delivery health is read twice per resync period, so its slots include the resync's
/// (`BBWO_BENCH_HEALTH_SECONDS` overrides, e.g. 3600 to measure without health reads).
fn health_seconds() -> u64 {
    std::env::var("BBWO_BENCH_HEALTH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn requests(w: &World, method: &str) -> u64 {
    routed(w, method, "").await
}

/// Requests by method whose route template contains `part`.
async fn routed(w: &World, method: &str, part: &str) -> u64 {
    w.ctl
        .requests()
        .await
        .expect("requests")
        .iter()
        .filter(|r| r["method"] == method && r["route"].as_str().is_some_and(|p| p.contains(part)))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn many_webhooks_converge_and_stay_cheap() {
    let health = health_seconds();
    let w = World::standalone("bench", Flavor::DataCenter).await;
    for r in 1..REPOSITORIES {
        w.ctl
            .repository(
                "DataCenter",
                &format!("PLAT/repo-{r}"),
                &[support::ADMIN],
                &[],
            )
            .await
            .expect("repository");
    }
    // Measure the operator, not the connection's budget (900 requests per hour by default
    // would pace 200 creates to about one every 4 s after a burst of 90).
    let connection = w.connection_yaml("bitbucket", support::ADMIN).replace(
        "  auth: {type: Bearer",
        "  rateLimit: {requestsPerHour: 100000}\n  auth: {type: Bearer",
    );
    w.apply(&connection).expect("connection");
    let mut operator = w
        .operator_command()
        .args([
            "--metrics-bind-address=127.0.0.1:0",
            &format!("--resync-period={RESYNC_SECONDS}s"),
            &format!("--health-period={health}s"),
            "--log-level=warn",
        ])
        .spawn()
        .expect("operator");
    let pid = operator.id().expect("pid");

    let total = REPOSITORIES * PER_REPOSITORY;
    let mut yaml = String::new();
    for i in 0..total {
        let repo = if i % REPOSITORIES == 0 {
            "api".to_owned()
        } else {
            format!("repo-{}", i % REPOSITORIES)
        };
        yaml.push_str(
            &w.webhook_yaml(
                &format!("hook-{i}"),
                &format!("https://ci.example.com/{i}"),
                "",
            )
            .replace("repository: PLAT/api", &format!("repository: PLAT/{repo}")),
        );
        yaml.push_str("---\n");
    }
    let started = Instant::now();
    w.apply(&yaml).expect("apply");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
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
        if ready == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {total} Ready after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = started.elapsed();
    let (gets, posts) = (requests(&w, "GET").await, requests(&w, "POST").await);
    let converge_statistics = routed(&w, "GET", "/statistics").await;
    let hooks = w.ctl.hooks().await.expect("hooks").len();

    // Steady state: three resync periods, no changes.
    w.ctl.reset_requests().await.expect("reset");
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS * 3)).await;
    let steady_gets = requests(&w, "GET").await;
    let steady_lists = w
        .ctl
        .requests()
        .await
        .expect("requests")
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["route"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/webhooks"))
        })
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum::<u64>();
    let steady_statistics = routed(&w, "GET", "/statistics").await;
    let steady_writes =
        requests(&w, "POST").await + requests(&w, "PUT").await + requests(&w, "DELETE").await;
    let rss = peak_rss_kib(pid).unwrap_or(0);
    let _ = operator.start_kill();

    println!("| measure | value |");
    println!("|---|---|");
    println!("| Webhooks / repositories | {total} / {REPOSITORIES} |");
    println!(
        "| time from `kubectl apply` to all Ready | {:.1} s |",
        converged.as_secs_f64()
    );
    println!(
        "| Bitbucket requests to converge | {gets} GET + {posts} POST ({} per Webhook) |",
        (gets + posts) as f64 / total as f64
    );
    println!("| of which per-hook statistics reads | {converge_statistics} |");
    println!("| hooks on Bitbucket afterwards | {hooks} |");
    println!(
        "| requests in 3 resync periods ({RESYNC_SECONDS} s each, health every {health} s), nothing changed | {steady_gets} GET, {steady_writes} writes |"
    );
    // Listing slots in the window: each health period, or each resync without health.
    let health_periods = (RESYNC_SECONDS * 3 / health).max(3);
    println!(
        "| repository listings (with statistics) in those {health_periods} listing slots | {steady_lists}: {:.2} per repository per slot; {steady_statistics} per-hook statistics reads |",
        steady_lists as f64 / (REPOSITORIES as u64 * health_periods) as f64
    );
    println!(
        "| operator peak RSS (VmHWM) | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    assert_eq!(hooks, total, "one hook per Webhook");
    assert_eq!(steady_writes, 0);
    assert_eq!(
        converge_statistics + steady_statistics,
        0,
        "no per-hook statistics"
    );
    assert!(
        steady_lists <= REPOSITORIES as u64 * (health_periods + 1),
        "at most one listing per repository per health period: {steady_lists}"
    );
}
