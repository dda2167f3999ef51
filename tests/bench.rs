//! `make bench`: the operator as a separate process against a real control plane and
//! `bitbucket-sim`, with many Webhooks. Measures time to Ready, Bitbucket requests (to
//! converge, and per resync and health period once converged: Data Center statistics come
//! with one listing per repository), what a restart costs, edit latency and the
//! operator's peak memory. Ignored by `make test`; prints a Markdown table for
//! docs/benchmarks.md.
//!
//! Sized by environment: `BBWO_BENCH_WEBHOOKS` (200), `BBWO_BENCH_PER_REPOSITORY` (10),
//! `BBWO_BENCH_FLAVOR` (`DataCenter` or `Cloud`), `BBWO_BENCH_RESYNC_SECONDS` (10),
//! `BBWO_BENCH_HEALTH_SECONDS` (half the resync; 3600 to measure without health reads);
//! `BBWO_BENCH_HEAPTRACK=FILE` records a heaptrack heap profile of the operator there.
//! `hack/bench.sh` (`make bench`) runs the matrix of cases and the budget case.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::{Flavor, Webhook};
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use support::{World, flavor_name};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Size {
    webhooks: usize,
    per_repository: usize,
    flavor: Flavor,
    resync: u64,
    health: u64,
}

impl Size {
    fn from_env() -> Size {
        let resync = env_or("BBWO_BENCH_RESYNC_SECONDS", 10);
        Size {
            webhooks: env_or("BBWO_BENCH_WEBHOOKS", 200),
            per_repository: env_or("BBWO_BENCH_PER_REPOSITORY", 10).max(1),
            flavor: match std::env::var("BBWO_BENCH_FLAVOR").as_deref() {
                Ok("Cloud") => Flavor::Cloud,
                _ => Flavor::DataCenter,
            },
            resync,
            health: env_or("BBWO_BENCH_HEALTH_SECONDS", (resync / 2).max(1)),
        }
    }

    fn repositories(&self) -> usize {
        self.webhooks.div_ceil(self.per_repository)
    }

    fn repository(&self, w: &World, i: usize) -> String {
        let r = i % self.repositories();
        let owner = w.repository.split('/').next().unwrap_or("PLAT");
        if r == 0 {
            w.repository.clone()
        } else {
            format!("{owner}/repo-{r}")
        }
    }
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
    w.ctl.count(method, part).await.expect("requests")
}

/// Listings of a repository's hooks (Cloud `.../hooks`, Data Center `.../webhooks`; not
/// a workspace's or project's own, read once per list TTL for the inherited-duplicate
/// check).
async fn listings(w: &World) -> u64 {
    w.ctl
        .count_where(|method, route| {
            method == "GET"
                && (route.starts_with("/2.0/repositories/") || route.contains("/repos/"))
                && (route.ends_with("/webhooks") || route.ends_with("/hooks"))
        })
        .await
        .expect("requests")
}

fn ready(h: &Webhook) -> bool {
    h.status.as_ref().is_some_and(|s| {
        s.observed_generation == h.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn count_ready(w: &World) -> usize {
    let list = w.webhooks().list(&Default::default()).await.expect("list");
    list.items.iter().filter(|h| ready(h)).count()
}

/// Waits until `total` Webhooks are Ready, printing progress; the time it took. The
/// operator's Ready gauge is polled (cheap; listing thousands of Webhooks twice a second
/// would load the API server being measured), then the API server confirms.
async fn wait_all_ready(w: &World, metrics: &str, total: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let gauge = ready_gauge(metrics).await.unwrap_or(0);
        if gauge >= total as u64 {
            let n = count_ready(w).await;
            if n == total {
                return started.elapsed();
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "bench: {gauge} of {total} Ready after {:.0?}",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "{gauge} of {total} Ready after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator's metrics endpoint, as text.
async fn scrape(metrics: &str) -> Option<String> {
    reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of the series whose line starts with `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Mean Webhook reconcile time so far, from the operator's histogram.
async fn mean_reconcile(metrics: &str) -> Option<Duration> {
    let text = scrape(metrics).await?;
    let sum = metric(
        &text,
        "bbwo_reconcile_duration_seconds_sum{kind=\"Webhook\"}",
    )?;
    let count = metric(
        &text,
        "bbwo_reconcile_duration_seconds_count{kind=\"Webhook\"}",
    )?;
    (count > 0.0).then(|| Duration::from_secs_f64(sum / count))
}

/// The operator's Ready gauge, scraped from its metrics endpoint.
async fn ready_gauge(metrics: &str) -> Option<u64> {
    let text = scrape(metrics).await?;
    let ready = metric(
        &text,
        "bbwo_webhooks_by_condition{condition=\"Ready\",status=\"True\"}",
    )?;
    // A gauge of whole Webhooks.
    Some(ready as u64)
}

/// CPU seconds used so far by the processes on this machine that the bench loads: the
/// control plane's, the operator (its command name, cut to 15 characters) and this
/// process (the client creating Webhooks and the simulator).
fn cpu_seconds() -> BTreeMap<&'static str, f64> {
    let names = [
        ("kube-apiserver", "kube-apiserver"),
        ("etcd", "etcd"),
        ("kube-controller", "kube-controller-manager"),
        ("bitbucket-webho", "operator"),
    ];
    let ticks = |stat: &str| -> Option<f64> {
        // After the command: utime and stime are the 12th and 13th fields.
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / 100.0)
    };
    let mut used = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let comm = stat
            .split_once(" (")
            .and_then(|(_, r)| r.rsplit_once(") "))
            .map_or("", |(c, _)| c);
        if let Some((_, label)) = names.iter().find(|(n, _)| *n == comm)
            && let Some(s) = ticks(&stat)
        {
            *used.entry(*label).or_default() += s;
        }
    }
    if let Some(s) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
    {
        used.insert("bench and simulator", s);
    }
    used
}

/// The API server's request counters for what the operator touches, by "verb resource"
/// (all clients: the bench's own creates and lists are in them too).
fn api_requests(w: &World) -> BTreeMap<String, f64> {
    let text = w
        .plane
        .kubectl_ok(["get", "--raw", "/metrics"])
        .unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let resource = label("resource");
        if !["webhooks", "secrets", "events"].contains(&resource.as_str()) {
            continue;
        }
        let subresource = label("subresource");
        let key = if subresource.is_empty() {
            format!("{} {resource}", label("verb"))
        } else {
            format!("{} {resource}/{subresource}", label("verb"))
        };
        *counts.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// `after - before` per Webhook, as "1.00 PATCH webhooks, ...".
fn per_webhook(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, n: usize) -> String {
    after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(k, d)| format!("{:.2} {k}", d / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The case's repositories on the simulator and the connection "bitbucket" with a budget
/// of `per_hour` requests.
async fn prepare(w: &World, size: &Size, per_hour: u64) {
    for i in 1..size.repositories() {
        w.ctl
            .repository(
                flavor_name(size.flavor),
                &size.repository(w, i),
                &[support::ADMIN],
                &[],
            )
            .await
            .expect("repository");
    }
    budget_connection(w, per_hour);
}

/// The connection "bitbucket" with a budget of `per_hour` requests.
fn budget_connection(w: &World, per_hour: u64) {
    let connection = w.connection_yaml("bitbucket", support::ADMIN).replace(
        "  auth: {type: Bearer",
        &format!("  rateLimit: {{requestsPerHour: {per_hour}}}\n  auth: {{type: Bearer"),
    );
    w.apply(&connection).expect("connection");
}

/// The operator of a budget case: resync and health an hour apart, so only the work of
/// converging spends the budget.
fn hour_long_operator(w: &World, metrics: &str) -> tokio::process::Child {
    w.operator_command()
        .args([
            format!("--metrics-bind-address={metrics}"),
            "--resync-period=1h".to_owned(),
            "--health-period=1h".to_owned(),
            "--log-level=warn".to_owned(),
        ])
        .spawn()
        .expect("operator")
}

/// The shortest time a budget of `per_hour` allows for `requests`: its burst (a tenth)
/// at once, then one per 3,600 s / (`per_hour` - burst).
fn budget_minimum(per_hour: u64, requests: u64) -> Duration {
    let burst = per_hour / 10;
    let period = 3600.0 / (per_hour - burst) as f64;
    Duration::from_secs_f64(requests.saturating_sub(burst) as f64 * period)
}

/// The case's Webhooks: `hook-N` on its repository, one URL each.
fn webhooks(w: &World, size: &Size) -> Vec<Webhook> {
    let [push, pr] = w.events();
    (0..size.webhooks)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "bitbucket.hooks.dev/v1alpha1",
                "kind": "Webhook",
                "metadata": {"name": format!("hook-{i}")},
                "spec": {
                    "connectionRef": {"name": "bitbucket"},
                    "repository": size.repository(w, i),
                    "url": format!("https://ci.example.com/{i}"),
                    "events": [push, pr],
                },
            }))
            .expect("a Webhook")
        })
        .collect()
}

/// Creates them through the API, 16 at a time (what a GitOps tool does, faster than one
/// kubectl apply of thousands of documents).
async fn create(api: &kube::Api<Webhook>, objects: Vec<Webhook>) {
    futures::stream::iter(objects)
        .for_each_concurrent(16, |h| async move {
            api.create(&PostParams::default(), &h)
                .await
                .expect("create");
        })
        .await;
}

/// One case's figures for the matrix table (`hack/bench.sh`).
struct Summary {
    ready_after_apply: Duration,
    writes_per_hook: f64,
    lists_per_slot: f64,
    edit_p99: Duration,
    restart_requests: u64,
    rss_mib: f64,
}

impl Summary {
    /// One line the matrix script gathers into its table.
    fn print(&self, size: &Size) {
        println!(
            "summary: | {} | {} | {:.1} s | {:.2} | {:.2} | {:.0} ms | {} | {:.1} MiB |",
            flavor_name(size.flavor),
            size.webhooks,
            self.ready_after_apply.as_secs_f64(),
            self.writes_per_hook,
            self.lists_per_slot,
            self.edit_p99.as_secs_f64() * 1000.0,
            self.restart_requests,
            self.rss_mib
        );
    }
}

/// The smoke version in `make test`: 200 Data Center Webhooks, every figure asserted.
#[tokio::test]
async fn two_hundred_webhooks_converge_and_stay_cheap() {
    let size = Size {
        webhooks: 200,
        per_repository: 10,
        flavor: Flavor::DataCenter,
        resync: 10,
        health: 5,
    };
    run(&size, 20).await;
}

/// `make bench`: one case, sized by the environment.
#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn many_webhooks_converge_and_stay_cheap() {
    let size = Size::from_env();
    run(&size, 100).await.print(&size);
}

/// Converges `size`, then measures the steady state, `edits` edits one at a time and a
/// restart; prints the case's table and asserts what must hold at any size.
async fn run(size: &Size, edit_count: usize) -> Summary {
    let (total, repositories) = (size.webhooks, size.repositories());
    let (resync, health) = (size.resync, size.health);
    let w = World::standalone("bench", size.flavor).await;
    let flavor = flavor_name(size.flavor);
    eprintln!("bench: {total} {flavor} Webhooks on {repositories} repositories");
    // Measure the operator, not the connection's budget (900 requests per hour by default
    // would pace 200 creates to about one every 4 s after a burst of 90).
    prepare(&w, size, 1_000_000).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let flags = [
        format!("--metrics-bind-address={metrics}"),
        format!("--resync-period={resync}s"),
        format!("--health-period={health}s"),
        "--log-level=warn".to_owned(),
    ];
    let mut command = w.operator_command();
    command.args(&flags);
    // A heap profile of the first process (heaptrack's preload library writes its raw
    // data there; `heaptrack_interpret` and `heaptrack_print` read it afterwards).
    if let Ok(raw) = std::env::var("BBWO_BENCH_HEAPTRACK") {
        command
            .env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
            .env("DUMP_HEAPTRACK_OUTPUT", raw);
    }
    let mut operator = command.spawn().expect("operator");
    let pid = operator.id().expect("pid");

    let api = w.webhooks();
    let objects = webhooks(&w, size);
    let api_before = api_requests(&w);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    create(&api, objects).await;
    let applied = started.elapsed();
    eprintln!("bench: {total} Webhooks created in {applied:.1?}");
    let limit = Duration::from_secs(120 + total as u64 / 10);
    wait_all_ready(&w, &metrics, total, limit).await;
    let converged = started.elapsed();
    let api_to_converge = per_webhook(&api_before, &api_requests(&w), total);
    let cpu_to_converge = cpu_seconds()
        .iter()
        .map(|(k, v)| format!("{k} {:.0} s", v - cpu_before.get(k).copied().unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join(", ");
    let gauge = ready_gauge(&metrics).await;
    let (gets, posts) = (requests(&w, "GET").await, requests(&w, "POST").await);
    let converge_statistics = routed(&w, "GET", "/statistics").await;
    let hooks = w.ctl.hooks().await.expect("hooks").len();

    // Steady state: three resync periods, no changes.
    eprintln!("bench: steady state for {}s", resync * 3);
    w.ctl.reset_requests().await.expect("reset");
    let api_steady_before = api_requests(&w);
    tokio::time::sleep(Duration::from_secs(resync * 3)).await;
    let api_steady = per_webhook(&api_steady_before, &api_requests(&w), total);
    let steady_gets = requests(&w, "GET").await;
    let steady_lists = listings(&w).await;
    let steady_statistics = routed(&w, "GET", "/statistics").await;
    let steady_writes =
        requests(&w, "POST").await + requests(&w, "PUT").await + requests(&w, "DELETE").await;

    // Edits, one at a time: from the patch to the new generation Ready.
    let mut edits = Vec::new();
    for i in 0..edit_count {
        let name = format!("hook-{}", i * total / edit_count);
        let patch = serde_json::json!({"spec": {"title": format!("edited {i}")}});
        let t = Instant::now();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("edit");
        loop {
            if api.get(&name).await.is_ok_and(|h| ready(&h)) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "edit of {name} not applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        edits.push(t.elapsed());
    }
    edits.sort();
    let edit_p99 = edits[(edits.len() * 99 / 100).min(edits.len() - 1)];
    let rss = peak_rss_kib(pid).unwrap_or(0);
    let mean = mean_reconcile(&metrics).await;

    // A restart: what does the new process ask of Bitbucket before the next slot? (Run
    // with a day's resync period so that no repository's slot falls in the window.)
    operator.kill().await.expect("kill");
    w.ctl.reset_requests().await.expect("reset");
    let restarted = Instant::now();
    let mut restart_flags = flags.clone();
    restart_flags[1] = "--resync-period=86400s".to_owned();
    restart_flags[2] = "--health-period=86400s".to_owned();
    let _operator = w
        .operator_command()
        .args(&restart_flags)
        .spawn()
        .expect("operator");
    // Every Webhook seen (the gauge counts each one the new process reconciled), then a
    // few seconds more for anything that would follow.
    let mut restart_gauge = None;
    while restarted.elapsed() < Duration::from_secs(120) {
        restart_gauge = ready_gauge(&metrics).await;
        if restart_gauge == Some(total as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen_all = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restart_hook_requests = w
        .ctl
        .count_where(|_, route| route.contains("hooks"))
        .await
        .expect("requests");
    let restart_window = restarted.elapsed();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| measure | value |");
    println!("|---|---|");
    println!("| Webhooks / repositories / flavor | {total} / {repositories} / {flavor} |");
    println!(
        "| created through the API (16 at a time) in | {:.1} s |",
        applied.as_secs_f64()
    );
    println!(
        "| all Ready after the last create | {:.1} s ({:.1} s from the first) |",
        (converged - applied).as_secs_f64(),
        converged.as_secs_f64()
    );
    println!(
        "| Bitbucket requests to converge | {gets} GET + {posts} POST ({:.2} per Webhook; {:.2} writes per hook) |",
        (gets + posts) as f64 / total as f64,
        posts as f64 / total as f64
    );
    println!("| of which per-hook statistics reads | {converge_statistics} |");
    println!(
        "| Kubernetes API requests to converge, per Webhook (all clients) | {api_to_converge} |"
    );
    println!(
        "| CPU used from the first create until all were Ready ({:.0} s on 2 cores) | {cpu_to_converge} |",
        converged.as_secs_f64()
    );
    println!("| hooks on Bitbucket afterwards | {hooks} |");
    println!(
        "| Ready gauge (`bbwo_webhooks_by_condition`) when all were Ready | {} |",
        gauge.map_or("(not scraped)".to_owned(), |g| g.to_string())
    );
    println!(
        "| requests in 3 resync periods ({resync} s each, health every {health} s), nothing changed | {steady_gets} GET, {steady_writes} writes |"
    );
    println!(
        "| Kubernetes API requests in those 3 periods, per Webhook | {} |",
        if api_steady.is_empty() {
            "none"
        } else {
            &api_steady
        }
    );
    // Listing slots in the window: each health period (Data Center), else each resync.
    let slots = if size.flavor == Flavor::DataCenter {
        (resync * 3 / health).max(3)
    } else {
        3
    };
    println!(
        "| repository listings in those {slots} listing slots | {steady_lists}: {:.2} per repository per slot; {steady_statistics} per-hook statistics reads |",
        steady_lists as f64 / (repositories as u64 * slots) as f64
    );
    println!(
        "| edit to Ready, {edit_count} edits one at a time | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms |",
        ms(edits[edits.len() / 2]),
        ms(edit_p99),
        ms(edits[edits.len() - 1])
    );
    println!(
        "| after a restart: every Webhook seen (Ready gauge {}) after | {:.1} s |",
        restart_gauge.map_or("(not scraped)".to_owned(), |g| g.to_string()),
        seen_all.as_secs_f64()
    );
    println!(
        "| after a restart: hook requests in the first {:.0} s | {restart_hook_requests} |",
        restart_window.as_secs_f64()
    );
    println!(
        "| mean Webhook reconcile time (all of the above) | {} |",
        mean.map_or("(not scraped)".to_owned(), |m| format!("{:.0} ms", ms(m)))
    );
    println!(
        "| operator peak RSS (VmHWM) | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    assert_eq!(hooks, total, "one hook per Webhook");
    assert_eq!(posts as usize, total, "one create per hook");
    assert_eq!(steady_writes, 0);
    assert_eq!(
        gauge,
        Some(total as u64),
        "the Ready gauge agrees with the API server"
    );
    assert_eq!(
        restart_hook_requests, 0,
        "a restart re-read current Webhooks"
    );
    assert_eq!(
        converge_statistics + steady_statistics,
        0,
        "no per-hook statistics"
    );
    assert!(
        steady_lists <= repositories as u64 * (slots + 1),
        "at most one listing per repository per slot: {steady_lists}"
    );
    Summary {
        ready_after_apply: converged - applied,
        writes_per_hook: posts as f64 / total as f64,
        lists_per_slot: steady_lists as f64 / (repositories as u64 * slots) as f64,
        edit_p99,
        restart_requests: restart_hook_requests,
        rss_mib: rss as f64 / 1024.0,
    }
}

/// `make bench`: 400 Webhooks under a budget of 3,600 requests per hour. The budget
/// allows a burst of a tenth of it, then one request per 3,600 s / (3,600 - 360); the
/// shortest time for R requests is (R - 360) of those. Achieved over that minimum must
/// stay at or under 1.05: the budget is used at its limit, never beyond.
#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn a_budget_is_used_at_its_limit() {
    const PER_HOUR: u64 = 3600;
    let size = Size {
        webhooks: 400,
        per_repository: 10,
        flavor: Flavor::Cloud,
        resync: 3600,
        health: 3600,
    };
    let w = World::standalone("budget", size.flavor).await;
    prepare(&w, &size, PER_HOUR).await;
    w.ctl.reset_requests().await.expect("reset");
    let metrics = format!("127.0.0.1:{}", free_port());
    let _operator = hour_long_operator(&w, &metrics);
    let objects = webhooks(&w, &size);
    let started = Instant::now();
    create(&w.webhooks(), objects).await;
    wait_all_ready(&w, &metrics, size.webhooks, Duration::from_secs(600)).await;
    let achieved = started.elapsed();
    let sent = w.ctl.count_where(|_, _| true).await.expect("requests");
    let minimum = budget_minimum(PER_HOUR, sent);
    let ratio = achieved.as_secs_f64() / minimum.as_secs_f64().max(1.0);
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| {} Webhooks, budget {PER_HOUR}/h | {sent} Bitbucket requests; all Ready {:.1} s after the first create; the budget's minimum {:.1} s; achieved / minimum {ratio:.3} |",
        size.webhooks,
        achieved.as_secs_f64(),
        minimum.as_secs_f64()
    );
    println!(
        "summary-budget: | {} Webhooks at {PER_HOUR}/h | {sent} | {:.1} s | {:.1} s | {ratio:.3} |",
        size.webhooks,
        achieved.as_secs_f64(),
        minimum.as_secs_f64()
    );
    assert_eq!(w.ctl.hooks().await.expect("hooks").len(), size.webhooks);
    assert!(
        ratio <= 1.05,
        "the budget was not used at its limit: {ratio:.3}"
    );
}

/// `make bench`: a WebhookSet selecting 500 Cloud repositories through a connection with
/// a budget of 3,600 requests per hour (`BBWO_BENCH_SET_REPOSITORIES` and
/// `BBWO_BENCH_SET_PER_HOUR` change both: #23's case (b) is 2,000 at 1,000/h, about four
/// and a half hours). The set makes its Webhooks a few at a time, so each lists its
/// repository and creates its hook back to back: achieved over the budget's minimum for
/// the requests sent must stay at or under 1.05, and listings made again (a create
/// waiting longer than a listing is trusted) stay rare. Also reported: the requests sent
/// over the least the work needs (the discovery's pages, a listing and a create per
/// repository) and the time over the budget's minimum for that least.
#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn a_webhookset_of_500_repositories_uses_the_budget_at_its_limit() {
    let per_hour: u64 = env_or("BBWO_BENCH_SET_PER_HOUR", 3600);
    let repositories: usize = env_or("BBWO_BENCH_SET_REPOSITORIES", 500);
    let w = World::standalone("set-budget", Flavor::Cloud).await;
    let names: Vec<String> = (0..repositories)
        .map(|i| format!("acme/svc-{i:03}"))
        .collect();
    w.ctl
        .repositories("Cloud", &names, Some("CORE"), &[support::ADMIN])
        .await
        .expect("repositories");
    budget_connection(&w, per_hour);
    let metrics = format!("127.0.0.1:{}", free_port());
    let _operator = hour_long_operator(&w, &metrics);
    w.wait_connection("bitbucket", "Ready", "True").await;
    w.ctl.reset_requests().await.expect("reset");
    // The least the work needs: the discovery's pages (100 repositories each), then a
    // listing and a create per repository.
    let least = repositories.div_ceil(100) as u64 + 2 * repositories as u64;
    let limit = Duration::from_secs(1800).max(budget_minimum(per_hour, least) * 2);
    let started = Instant::now();
    w.apply(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {name: ci}\nspec:\n  \
         connectionRef: {name: bitbucket}\n  selector: {workspace: acme, project: CORE, include: [\"svc-*\"]}\n  \
         discoveryInterval: 1h\n  template: {spec: {url: \"https://ci.example.com/hooks\", events: [repo:push]}}\n",
    )
    .expect("set");
    let sets: kube::Api<bitbucket_webhook_operator::api::WebhookSet> =
        kube::Api::namespaced(w.client.clone(), &w.ns);
    let mut most_waiting = 0;
    let mut last_report = Instant::now();
    loop {
        let status = sets
            .get_opt("ci")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.status)
            .unwrap_or_default();
        most_waiting = most_waiting.max(status.waiting);
        if status.ready as usize == repositories {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            println!(
                "bench: {:.0} s: {} of {repositories} Ready, {} still to be made",
                started.elapsed().as_secs_f64(),
                status.ready,
                status.waiting
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "the set did not converge: {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let achieved = started.elapsed();
    let sent = w.ctl.count_where(|_, _| true).await.expect("requests");
    let creates = w
        .ctl
        .count_where(|m, r| m == "POST" && r.ends_with("/hooks"))
        .await
        .expect("requests");
    let repository_lists = w
        .ctl
        .count_where(|m, r| {
            m == "GET" && r.starts_with("/2.0/repositories/") && r.ends_with("/hooks")
        })
        .await
        .expect("requests");
    let relists = repository_lists.saturating_sub(repositories as u64);
    let minimum = budget_minimum(per_hour, sent);
    let needed = budget_minimum(per_hour, sent - relists);
    let ratio = achieved.as_secs_f64() / minimum.as_secs_f64().max(1.0);
    let least_time = budget_minimum(per_hour, least);
    let (least_ratio, least_time_ratio) = (
        sent as f64 / least as f64,
        achieved.as_secs_f64() / least_time.as_secs_f64().max(1.0),
    );
    println!(
        "bench: {sent} requests for a least of {least} ({least_ratio:.3}x); all Ready {:.1} s after the set was applied, the budget's minimum for the least {:.1} s ({least_time_ratio:.3}x)",
        achieved.as_secs_f64(),
        least_time.as_secs_f64()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| WebhookSet of {repositories} repositories, budget {per_hour}/h | {sent} Bitbucket requests ({creates} creates, {repository_lists} repository listings of which {relists} made again); all Ready {:.1} s after the set was applied; the budget's minimum {:.1} s ({:.1} s without the listings made again); achieved / minimum {ratio:.3}; at most {most_waiting} Webhooks waiting to be made |",
        achieved.as_secs_f64(),
        minimum.as_secs_f64(),
        needed.as_secs_f64()
    );
    println!(
        "summary-set: | WebhookSet of {repositories} at {per_hour}/h | {sent} (least {least}, {least_ratio:.3}x) | {:.1} s | {:.1} s | {ratio:.3} ({least_time_ratio:.3} over the least's minimum) |",
        achieved.as_secs_f64(),
        minimum.as_secs_f64()
    );
    assert_eq!(creates, repositories as u64, "one create per repository");
    assert!(most_waiting > 0, "creation was paced");
    assert!(
        relists <= repositories as u64 / 20,
        "{relists} listings made again: creates waited too long after their listings"
    );
    assert!(
        ratio <= 1.05,
        "the budget was not used at its limit: {ratio:.3}"
    );
}

/// `make bench`, #23's case (c): 500 Cloud Webhooks on 50 repositories whose endpoint all
/// change at once (a GitOps refactor) at Cloud's 1,000 webhook requests per hour. They are
/// made first with the budget lifted; then the connection asks for 1,000/h (a new budget:
/// its burst of 100 whole, the requests that made them not counted) and every URL
/// changes. The least the change needs is an update per hook: the repositories' listings
/// from the hour before are still trusted (`--resync-period=1h`). Requests sent over that
/// least, and the time to all Ready over the budget's minimum time for it ((500 - 100) x
/// 4 s), must stay at or under 1.1.
#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn five_hundred_webhooks_changed_at_once_at_cloud_s_limit() {
    const PER_HOUR: u64 = 1000;
    let size = Size {
        webhooks: 500,
        per_repository: 10,
        flavor: Flavor::Cloud,
        resync: 3600,
        health: 3600,
    };
    let w = World::standalone("refactor", size.flavor).await;
    prepare(&w, &size, 1_000_000).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let _operator = hour_long_operator(&w, &metrics);
    create(&w.webhooks(), webhooks(&w, &size)).await;
    wait_all_ready(&w, &metrics, size.webhooks, Duration::from_secs(600)).await;
    budget_connection(&w, PER_HOUR);
    let connections: kube::Api<bitbucket_webhook_operator::api::BitbucketConnection> =
        kube::Api::namespaced(w.client.clone(), &w.ns);
    loop {
        let connection = connections.get("bitbucket").await.expect("connection");
        let allowed = connection
            .status
            .and_then(|s| s.budget)
            .map(|b| b.requests_per_hour);
        if allowed == Some(PER_HOUR as i64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.ctl.reset_requests().await.expect("reset");
    let started = Instant::now();
    let api = w.webhooks();
    futures::stream::iter(0..size.webhooks)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let patch =
                    serde_json::json!({"spec": {"url": format!("https://ci.example.com/v2/{i}")}});
                api.patch(
                    &format!("hook-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .expect("patch");
            }
        })
        .await;
    let mut last_report = Instant::now();
    loop {
        let n = count_ready(&w).await;
        if n == size.webhooks {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            println!(
                "bench: {:.0} s: {n} of {} changed and Ready",
                started.elapsed().as_secs_f64(),
                size.webhooks
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3000),
            "{n} of {} changed and Ready",
            size.webhooks
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let achieved = started.elapsed();
    let sent = w.ctl.count_where(|_, _| true).await.expect("requests");
    let updates = w
        .ctl
        .count_where(|m, r| m == "PUT" && r.contains("/hooks/"))
        .await
        .expect("requests");
    let listings = w
        .ctl
        .count_where(|m, r| m == "GET" && r.ends_with("/hooks"))
        .await
        .expect("requests");
    let least = size.webhooks as u64;
    let least_time = budget_minimum(PER_HOUR, least);
    let (requests_ratio, time_ratio) = (
        sent as f64 / least as f64,
        achieved.as_secs_f64() / least_time.as_secs_f64().max(1.0),
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| {} Webhooks changed at once, budget {PER_HOUR}/h | {sent} Bitbucket requests ({updates} updates, {listings} listings) for a least of {least} ({requests_ratio:.3}x); all Ready {:.1} s after the change; the budget's minimum for the least {:.1} s ({time_ratio:.3}x) |",
        size.webhooks,
        achieved.as_secs_f64(),
        least_time.as_secs_f64()
    );
    println!(
        "summary-refactor: | {} Webhooks changed at once at {PER_HOUR}/h | {sent} (least {least}, {requests_ratio:.3}x) | {:.1} s | {:.1} s | {time_ratio:.3} |",
        size.webhooks,
        achieved.as_secs_f64(),
        least_time.as_secs_f64()
    );
    let hooks = w.ctl.hooks().await.expect("hooks");
    assert_eq!(hooks.len(), size.webhooks, "one hook each, none added");
    assert!(
        hooks
            .iter()
            .all(|h| h["url"].as_str().is_some_and(|u| u.contains("/v2/"))),
        "every hook has its new URL"
    );
    assert!(
        requests_ratio <= 1.1,
        "{sent} requests for {least}: {requests_ratio:.3}x"
    );
    assert!(time_ratio <= 1.1, "{time_ratio:.3}x the budget's minimum");
}

/// `make bench`, #23's steady state: 2,000 Cloud Webhooks on 2,000 repositories at
/// Cloud's 1,000 webhook requests per hour with the default resync period (10 minutes):
/// one listing per repository that often would be 12,000 an hour. They are made with the
/// budget lifted; then the connection asks for 1,000/h and the operator restarts (no
/// listing cached, every status to be checked again at its slot). Over the next
/// `BBWO_BENCH_STEADY_MINUTES` (20) periodic work must take no more than its share (half
/// of the budget: a burst of 50, then 450 an hour) allows, and 20 Webhooks changed halfway
/// are Ready within a minute.
#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn a_steady_state_of_2000_webhooks_leaves_half_of_the_budget_free() {
    const PER_HOUR: u64 = 1000;
    let minutes: u64 = env_or("BBWO_BENCH_STEADY_MINUTES", 20);
    let size = Size {
        webhooks: 2000,
        per_repository: 1,
        flavor: Flavor::Cloud,
        resync: 600,
        health: 3600,
    };
    let w = World::standalone("steady", size.flavor).await;
    prepare(&w, &size, 1_000_000).await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let operator_at = |metrics: &str| {
        w.operator_command()
            .args([
                format!("--metrics-bind-address={metrics}"),
                "--resync-period=10m".to_owned(),
                "--health-period=1h".to_owned(),
                "--log-level=warn".to_owned(),
            ])
            .spawn()
            .expect("operator")
    };
    let mut operator = operator_at(&metrics);
    create(&w.webhooks(), webhooks(&w, &size)).await;
    wait_all_ready(&w, &metrics, size.webhooks, Duration::from_secs(900)).await;
    budget_connection(&w, PER_HOUR);
    operator.kill().await.expect("kill");
    let metrics = format!("127.0.0.1:{}", free_port());
    let _operator = operator_at(&metrics);
    w.ctl.reset_requests().await.expect("reset");
    let started = Instant::now();
    let window = Duration::from_secs(minutes * 60);
    let api = w.webhooks();
    let mut changed: Option<(Instant, Option<Duration>)> = None;
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match changed {
            None if started.elapsed() >= window / 2 => {
                for i in 0..20 {
                    let patch = serde_json::json!({"spec": {"url": format!("https://ci.example.com/changed/{i}")}});
                    api.patch(
                        &format!("hook-{}", i * 97),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .expect("patch");
                }
                changed = Some((Instant::now(), None));
            }
            Some((at, None)) => {
                let list = api.list(&Default::default()).await.expect("list");
                let done = (0..20)
                    .filter(|i| {
                        list.items.iter().any(|h| {
                            h.metadata.name.as_deref() == Some(&format!("hook-{}", i * 97))
                                && ready(h)
                        })
                    })
                    .count();
                if done == 20 {
                    changed = Some((at, Some(at.elapsed())));
                }
            }
            _ => {}
        }
        if started.elapsed().as_secs() % 120 < 5 {
            let sent = w.ctl.count_where(|_, _| true).await.expect("requests");
            println!(
                "bench: {:.0} s: {sent} requests",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let sent = w.ctl.count_where(|_, _| true).await.expect("requests");
    let writes = w
        .ctl
        .count_where(|m, _| m != "GET")
        .await
        .expect("requests");
    let listings = listings(&w).await;
    let per_hour = sent as f64 * 3600.0 / window.as_secs_f64();
    // Periodic: everything but the changes (their writes, and a listing each at most).
    let periodic = sent.saturating_sub(writes + 20);
    let periodic_per_hour = periodic as f64 * 3600.0 / window.as_secs_f64();
    // What periodic work's share (half: a burst of a tenth of it, the rest spread over
    // the hour, so no rolling hour exceeds it) allows within the window.
    let share = bitbucket_webhook_operator::bitbucket::budget::periodic_share(PER_HOUR as u32);
    let share_burst = f64::from(share / 10);
    let allowed = share_burst + (f64::from(share) - share_burst) * window.as_secs_f64() / 3600.0;
    let changed_in = changed.and_then(|(_, d)| d);
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| {} Webhooks on {} repositories at {PER_HOUR}/h, resync 10 min, {minutes} min after a restart | {sent} Bitbucket requests ({listings} repository listings, {writes} writes): {per_hour:.0}/h in all; periodic work {periodic} ({periodic_per_hour:.0}/h over the window), its share allows {allowed:.0} in the window ({share}/h over any hour); 20 Webhooks changed halfway all Ready after {} |",
        size.webhooks,
        size.repositories(),
        changed_in.map_or("(not within the window)".to_owned(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );
    println!(
        "summary-steady: | 2,000 Webhooks steady at {PER_HOUR}/h | {sent} in {minutes} min | periodic {periodic} (its share allows {allowed:.0}) | 20 changes Ready in {} |",
        changed_in.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    assert!(
        periodic as f64 <= allowed * 1.05,
        "periodic work took {periodic} requests in {minutes} min; its half of {PER_HOUR}/h allows {allowed:.0}"
    );
    assert!(
        changed_in.is_some_and(|d| d <= Duration::from_secs(60)),
        "the changes were Ready after {changed_in:?}"
    );
}

/// A Data Center instance of `projects` projects with `per_project` repositories, one hook
/// each, on a fresh simulator.
async fn instance(projects: usize, per_project: usize) -> bitbucket_sim::Running {
    use bitbucket_webhook_operator::bitbucket::{HookSpec, Place, RepoRef, SecretChange};
    let sim = bitbucket_sim::start().await.expect("simulator");
    let ctl = sim.control();
    ctl.token(support::ADMIN, "alice").await.expect("token");
    let client = support::admin_client(Flavor::DataCenter, &sim.base_url());
    for p in 0..projects {
        let repos: Vec<String> = (0..per_project)
            .map(|r| format!("P{p:02}/repo-{r:03}"))
            .collect();
        ctl.owner_admins("DataCenter", &repos[0], &[support::ADMIN])
            .await
            .expect("project admin");
        ctl.repositories("DataCenter", &repos, None, &[support::ADMIN])
            .await
            .expect("repositories");
        for repo in &repos {
            let place = Place::Repository(RepoRef::parse(repo).expect("repo"));
            let spec = HookSpec {
                title: "ci".into(),
                url: format!("https://ci.example.com/{repo}"),
                active: true,
                events: vec!["repo:refs_changed".into()],
                secret: SecretChange::Remove,
                skip_cert_verification: false,
            };
            client.create_hook(&place, &spec).await.expect("create");
        }
    }
    ctl.reset_requests().await.expect("reset");
    sim
}

/// `inventory --all-projects` against `sim` at `per_hour`: its JSON, the wall time, and the
/// requests the simulator saw.
async fn inventory_of(
    sim: &bitbucket_sim::Running,
    per_hour: u64,
) -> (serde_json::Value, Duration, u64) {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"))
        .args(["inventory", "--flavor", "DataCenter", "--base-url"])
        .arg(sim.base_url())
        .args(["--all-projects", "-o", "json", "--requests-per-hour"])
        .arg(per_hour.to_string())
        .env("BITBUCKET_TOKEN", support::ADMIN)
        .output()
        .await
        .expect("inventory runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = serde_json::from_slice(&out.stdout).expect("json");
    let seen = sim
        .control()
        .count_where(|_, _| true)
        .await
        .expect("requests");
    (found, took, seen)
}

/// `make bench`: `inventory --all-projects` of a Data Center instance. 1,000 repositories
/// in 20 projects with the budget lifted out of the way (requests per place, time); then
/// 150 repositories in 3 projects at Cloud's 1,000 requests per hour, where the budget
/// binds: achieved over the budget's minimum must stay at or under 1.05.
#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn an_inventory_uses_one_request_per_place_within_its_budget() {
    let large = instance(20, 50).await;
    let (found, took, seen) = inventory_of(&large, 1_000_000).await;
    let places = found["totals"]["places"].as_u64().unwrap_or(0);
    assert_eq!(
        (places, found["totals"]["hooks"].as_u64()),
        (1020, Some(1000))
    );
    assert_eq!(
        found["requests"].as_u64(),
        Some(seen),
        "the inventory counts what Bitbucket saw"
    );
    println!(
        "| inventory case | places | Bitbucket requests | per place | took | the budget's minimum | achieved / minimum |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| 1,000 repositories in 20 projects, budget lifted (1,000,000/h) | {places} | {seen} | {:.3} | {:.1} s | - | - |",
        seen as f64 / places as f64,
        took.as_secs_f64()
    );
    const PER_HOUR: u64 = 1000;
    let small = instance(3, 50).await;
    let (found, took, seen) = inventory_of(&small, PER_HOUR).await;
    let places = found["totals"]["places"].as_u64().unwrap_or(0);
    let minimum = budget_minimum(PER_HOUR, seen);
    let ratio = took.as_secs_f64() / minimum.as_secs_f64().max(1.0);
    println!(
        "| 150 repositories in 3 projects at {PER_HOUR}/h | {places} | {seen} | {:.3} | {:.1} s | {:.1} s | {ratio:.3} |",
        seen as f64 / places as f64,
        took.as_secs_f64(),
        minimum.as_secs_f64()
    );
    println!(
        "summary-inventory: | inventory of 153 places at {PER_HOUR}/h | {seen} | {:.1} s | {:.1} s | {ratio:.3} |",
        took.as_secs_f64(),
        minimum.as_secs_f64()
    );
    assert!(
        ratio <= 1.05,
        "the budget was not used at its limit: {ratio:.3}"
    );
}
