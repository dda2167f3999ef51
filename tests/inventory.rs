//! `inventory` against the simulator and the test cluster, on all three backends: hand-made
//! hooks (managed, unmanaged, duplicated, inherited duplicates, inactive, failing, never
//! delivered, unreachable, certificate expiring) found and flagged in every output, the
//! HTML report in a real headless Chromium, resuming after a 429, and the Data Center to
//! Cloud migration of docs/migrating-to-cloud.md run end to end.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitbucket_sim::receiver::Receiver;
use bitbucket_webhook_operator::api::Flavor;
use bitbucket_webhook_operator::bitbucket::{
    HookSpec, Place, RepoRef, SecretChange, WebhookBackend,
};
use serde_json::Value;
use support::{ADMIN, World, flavor_name, is_ready, outcome};

fn client(w: &World) -> std::sync::Arc<dyn WebhookBackend> {
    support::admin_client(w.flavor, &w.base_url())
}

fn repo(name: &str) -> Place {
    Place::Repository(RepoRef::parse(name).expect("repo"))
}

/// Hand-made hooks: (place, title, url, events, active), created by an admin.
async fn make(w: &World, hooks: &[(Place, &str, String, &[&str], bool)]) {
    let client = client(w);
    for (place, title, url, events, active) in hooks {
        let spec = HookSpec {
            title: (*title).to_owned(),
            url: url.clone(),
            active: *active,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: SecretChange::Remove,
            skip_cert_verification: url.starts_with("https"),
        };
        client.create_hook(place, &spec).await.expect("create");
    }
}

/// `inventory` with the test's credential and cluster; `Ok(stdout)` or `Err(stderr)`.
async fn inventory(w: &World, args: &[&str]) -> (Result<String, String>, String) {
    inventory_as(w, ADMIN, args).await
}

async fn inventory_as(w: &World, token: &str, args: &[&str]) -> (Result<String, String>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"))
        .args(["inventory", "--flavor", flavor_name(w.flavor), "--base-url"])
        .arg(w.base_url())
        .args(args)
        .env("BITBUCKET_TOKEN", token)
        .env("KUBECONFIG", w.plane.kubeconfig())
        .output()
        .await
        .expect("inventory runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let result = if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr.clone())
    };
    (result, stderr)
}

/// `what` of each hook, by title, from the JSON output.
fn by_title<T>(inventory: &Value, what: impl Fn(&Value) -> T) -> BTreeMap<String, T> {
    inventory["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| (h["title"].as_str().unwrap_or_default().to_owned(), what(h)))
        .collect()
}

/// Each hook's flags by title.
fn flags_by_title(inventory: &Value) -> BTreeMap<String, Vec<String>> {
    by_title(inventory, |h| {
        h["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|f| f["flag"].as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

/// A URL on a loopback port nothing listens on.
fn closed_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}/hook", closed.local_addr().expect("addr"))
}

fn expect_flags(found: &BTreeMap<String, Vec<String>>, expected: &[(&str, &[&str])]) {
    let expected: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(t, f)| ((*t).to_owned(), f.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    assert_eq!(found, &expected);
}

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inventory");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir
}

/// A managed Webhook made through the cluster, Ready.
async fn managed(w: &World, url: &str) {
    w.apply(&w.webhook_yaml("managed", url, "  title: managed\n"))
        .expect("apply");
    w.wait_ready("managed").await;
}

#[tokio::test]
async fn data_center_hooks_are_found_flagged_and_reported_in_every_output() {
    let w = World::new("inventory-dc", Flavor::DataCenter).await;
    w.ctl
        .owner_admins("DataCenter", &w.repository, &[ADMIN])
        .await
        .expect("project admin");
    w.ctl
        .repository("DataCenter", "PLAT/web", &[ADMIN], &[])
        .await
        .expect("repository");
    let ok = Receiver::start(false).await.expect("receiver");
    let bad = Receiver::start(false).await.expect("receiver");
    bad.set_status(500);
    let expiring = Receiver::start_expiring(3).await.expect("receiver");
    let down = closed_url();
    managed(&w, &format!("{}/managed", ok.url())).await;
    let push: &[&str] = &["repo:refs_changed"];
    let merged: &[&str] = &["pr:merged"];
    let at = |path: &str| format!("{}/{path}", ok.url());
    make(
        &w,
        &[
            (
                Place::Project("PLAT".into()),
                "project-wide",
                at("all"),
                push,
                true,
            ),
            (repo("PLAT/api"), "plain", at("plain"), push, true),
            (repo("PLAT/api"), "inherited", at("all"), push, true),
            (
                repo("PLAT/api"),
                "failing",
                format!("{}/f", bad.url()),
                push,
                true,
            ),
            (repo("PLAT/api"), "never", at("never"), merged, true),
            (repo("PLAT/api"), "inactive", at("off"), push, false),
            (repo("PLAT/api"), "down", down.clone(), merged, true),
            (repo("PLAT/api"), "expiring", expiring.url(), merged, true),
            (repo("PLAT/web"), "first", at("dup"), push, true),
            (repo("PLAT/web"), "second", at("dup"), push, true),
        ],
    )
    .await;
    for repository in ["PLAT/api", "PLAT/web"] {
        w.ctl
            .emit(repository, "repo:refs_changed")
            .await
            .expect("emit");
    }
    w.ctl.reset_requests().await.expect("reset");

    let state = artefacts().join("dc-state.json");
    let _ = std::fs::remove_file(&state);
    let common = [
        "--project",
        "PLAT",
        "--cluster",
        "--probe",
        "--probe-private-targets",
        "--requests-per-hour",
        "60",
        "--state",
    ];
    let mut args: Vec<&str> = common.to_vec();
    let state_arg = state.to_string_lossy().to_string();
    args.extend([state_arg.as_str(), "--output", "json"]);
    let (json, stderr) = inventory(&w, &args).await;
    let json = json.unwrap_or_else(|e| panic!("inventory failed: {e}"));
    assert!(
        stderr.contains("[3/3] PLAT/web: 2 hooks"),
        "progress: {stderr}"
    );
    let found: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(found["schema"], "bitbucket-webhook-operator/inventory/v1");
    // docs/inventory.schema.json is generated from this type.
    serde_json::from_str::<bitbucket_webhook_operator::inventory::model::Inventory>(&json)
        .expect("the output reads back as the documented type");
    expect_flags(
        &flags_by_title(&found),
        &[
            ("project-wide", &["Unmanaged"]),
            ("managed", &[]),
            ("plain", &["Unmanaged"]),
            ("inherited", &["Unmanaged", "InheritedDuplicate"]),
            ("failing", &["Unmanaged", "Failing", "Unreachable"]),
            ("never", &["Unmanaged", "NeverDelivered"]),
            ("inactive", &["Unmanaged", "Inactive"]),
            ("down", &["Unmanaged", "NeverDelivered", "Unreachable"]),
            (
                "expiring",
                &["Unmanaged", "NeverDelivered", "CertificateExpiring"],
            ),
            ("first", &["Unmanaged"]),
            ("second", &["Unmanaged", "DuplicateUrl"]),
        ],
    );
    let managed = found["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .find(|h| h["title"] == "managed")
        .expect("managed");
    assert_eq!(managed["managedBy"]["namespace"], w.ns.as_str());
    assert_eq!(managed["health"], "Healthy");
    // Within the budget: one listing of the project's repositories and one per place (as
    // the client counted them: the operator's own resyncs of "managed" reach the simulator
    // too; tests below count on the simulator where nothing else calls it).
    assert_eq!(found["requests"], 4);
    assert_eq!(found["totals"]["flagged"], 10);
    assert!(!json.contains(ADMIN), "the token is never printed");

    // The same state file: the table and the page come from what was listed, no request.
    let mut args: Vec<&str> = common.to_vec();
    args.extend([state_arg.as_str(), "--output", "table"]);
    let (table, stderr) = inventory(&w, &args).await;
    let table = table.unwrap_or_else(|e| panic!("inventory failed: {e}"));
    assert!(stderr.contains("(from the state file)"), "{stderr}");
    assert!(
        stderr.contains(", 0 requests"),
        "nothing listed twice: {stderr}"
    );
    assert!(table.contains("  DuplicateUrl: hook "), "{table}");
    assert!(
        table.contains("    fix: delete this copy: curl -fsS -X DELETE"),
        "{table}"
    );
    assert!(
        table.contains("11 hooks on 3 places (0 unreadable), 1 managed, 10 flagged"),
        "{table}"
    );
    let page = artefacts().join("dc.html");
    let page_arg = page.to_string_lossy().to_string();
    let mut args: Vec<&str> = common.to_vec();
    args.extend([state_arg.as_str(), "--output", "html", "--out", &page_arg]);
    let (html, stderr) = inventory(&w, &args).await;
    html.unwrap_or_else(|e| panic!("inventory failed: {e}"));
    assert!(stderr.contains(", 0 requests"), "{stderr}");
    browser::check_report(&page, &found);

    // The whole instance: one more request, for the project listing.
    let (all, stderr) = inventory(&w, &["--all-projects", "-o", "json"]).await;
    let all: Value = serde_json::from_str(&all.unwrap_or_else(|e| panic!("inventory failed: {e}")))
        .expect("json");
    assert!(stderr.contains("1 projects"), "{stderr}");
    assert_eq!(all["scope"], "every project");
    assert_eq!(
        (all["totals"]["hooks"].as_u64(), all["requests"].as_u64()),
        (Some(11), Some(5))
    );
    assert_eq!(all["clusterRead"], false);
    assert_eq!(
        all["totals"]["byFlag"]["Unmanaged"], 0,
        "unknown without the cluster"
    );
}

#[tokio::test]
async fn cloud_workspace_and_post_webhooks_repository_hooks_are_flagged() {
    let w = World::new("inventory-cloud", Flavor::Cloud).await;
    w.ctl
        .owner_admins("Cloud", &w.repository, &[ADMIN])
        .await
        .expect("workspace admin");
    let ok = Receiver::start(false).await.expect("receiver");
    let at = |path: &str| format!("{}/{path}", ok.url());
    let down = closed_url();
    managed(&w, &at("managed")).await;
    let push: &[&str] = &["repo:push"];
    make(
        &w,
        &[
            (
                Place::Workspace("acme".into()),
                "workspace-wide",
                at("all"),
                push,
                true,
            ),
            (repo("acme/api"), "inherited", at("all"), push, true),
            (repo("acme/api"), "first", at("dup"), push, true),
            (repo("acme/api"), "second", at("dup"), push, true),
            (repo("acme/api"), "inactive", at("off"), push, false),
            (repo("acme/api"), "down", down.clone(), push, true),
        ],
    )
    .await;
    let (json, stderr) = inventory(
        &w,
        &[
            "--workspace",
            "acme",
            "--cluster",
            "--probe",
            "--probe-private-targets",
            "-o",
            "json",
        ],
    )
    .await;
    let json = json.unwrap_or_else(|e| panic!("inventory failed: {e}"));
    assert!(stderr.contains("[2/2] acme/api: 6 hooks"), "{stderr}");
    let found: Value = serde_json::from_str(&json).expect("json");
    expect_flags(
        &flags_by_title(&found),
        &[
            ("workspace-wide", &["Unmanaged"]),
            ("managed", &[]),
            ("inherited", &["Unmanaged", "InheritedDuplicate"]),
            ("first", &["Unmanaged"]),
            ("second", &["Unmanaged", "DuplicateUrl"]),
            ("inactive", &["Unmanaged", "Inactive"]),
            ("down", &["Unmanaged", "Unreachable"]),
        ],
    );
    // Cloud reports no statistics: health is the probe's.
    let health = by_title(&found, |h| {
        h["health"].as_str().unwrap_or_default().to_owned()
    });
    assert_eq!(health["down"], "Failing");
    assert_eq!(health["first"], "Healthy");

    let w = World::new("inventory-pw", Flavor::PostWebhooks).await;
    managed(&w, &at("pw-managed")).await;
    let push: &[&str] = &["ABSTRACT_REPOSITORY_REFS_CHANGED"];
    make(
        &w,
        &[
            (repo("PLAT/api"), "first", at("pw-dup"), push, true),
            (repo("PLAT/api"), "second", at("pw-dup"), push, true),
            (repo("PLAT/api"), "inactive", at("pw-off"), push, false),
            (repo("PLAT/api"), "down", down.clone(), push, true),
        ],
    )
    .await;
    let (table, _) = inventory(
        &w,
        &[
            "--repository",
            "PLAT/api",
            "--cluster",
            "--probe",
            "--probe-private-targets",
        ],
    )
    .await;
    let table = table.unwrap_or_else(|e| panic!("inventory failed: {e}"));
    assert!(
        table.contains("5 hooks on 1 places (0 unreadable), 1 managed, 4 flagged: DuplicateUrl 1, Inactive 1, Unmanaged 4, Unreachable 1"),
        "{table}"
    );
    assert!(
        table.contains(&format!("Webhook {}/managed", w.ns)),
        "{table}"
    );
}

#[tokio::test]
async fn an_interrupted_inventory_resumes_without_listing_again() {
    let w = World::new("inventory-resume", Flavor::DataCenter).await;
    // Bitbucket counts requests per credential: the inventory's own, so that the operator's
    // requests for the test's connection do not count against it.
    const TOKEN: &str = "inventory-token";
    w.ctl.token(TOKEN, "carol").await.expect("token");
    w.ctl
        .owner_admins("DataCenter", &w.repository, &[ADMIN, TOKEN])
        .await
        .expect("project admin");
    let repos: Vec<String> = (0..8).map(|i| format!("PLAT/svc-{i}")).collect();
    w.ctl
        .repositories("DataCenter", &repos, None, &[ADMIN])
        .await
        .expect("repositories");
    w.ctl.reset_requests().await.expect("reset");
    // Bitbucket answers 429 after five requests and asks for a minute's wait.
    w.ctl
        .faults(serde_json::json!({ "rateLimitPerHour": 5, "retryAfter": 60 }))
        .await
        .expect("faults");
    let state = artefacts().join("resume-state.json");
    let _ = std::fs::remove_file(&state);
    let state_arg = state.to_string_lossy().to_string();
    let mut first = tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"))
        .args(["inventory", "--flavor", "DataCenter", "--base-url"])
        .arg(w.base_url())
        .args(["--project", "PLAT", "--state", &state_arg, "-o", "json"])
        .env("BITBUCKET_TOKEN", TOKEN)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("inventory starts");
    let stderr = first.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut seen = String::new();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("rate limited") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(waited, Ok(true), "the run waits out the 429: {seen}");
    first.kill().await.expect("interrupt");
    assert!(
        seen.contains("[4/10]"),
        "four places listed before the 429: {seen}"
    );

    w.ctl.clear_faults().await.expect("faults");
    let (json, stderr) = inventory_as(
        &w,
        TOKEN,
        &["--project", "PLAT", "--state", &state_arg, "-o", "json"],
    )
    .await;
    let json = json.unwrap_or_else(|e| panic!("inventory failed: {e}"));
    assert_eq!(
        stderr.matches("(from the state file)").count(),
        4,
        "{stderr}"
    );
    let found: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(found["totals"]["places"], 10);
    assert_eq!(found["complete"], true);
    // Each place was listed once with success over both runs; the repositories once.
    let listings = w
        .ctl
        .count_where(|method, route| method == "GET" && route.ends_with("/webhooks"))
        .await
        .expect("count");
    let refused = w.ctl.requests().await.expect("requests");
    let ok_listings: u64 = refused
        .iter()
        .filter(|r| {
            r["status"] == 200
                && r["route"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/webhooks"))
        })
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ok_listings, 10, "{refused:?}");
    assert_eq!(
        listings, 11,
        "ten answered and the one refused with 429: {refused:?}"
    );
}

/// The report in a real headless Chromium.
mod browser {
    use super::*;

    fn chromium() -> PathBuf {
        let on_path = || {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("chromium"))
                .find(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
        };
        let path = std::env::var_os("BBWO_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(on_path);
        assert!(
            path.exists(),
            "the report test needs Chromium: install Debian's chromium package (apt-get install chromium) or set BBWO_CHROMIUM"
        );
        path
    }

    /// The DOM after the page's script ran, and what Chromium logged.
    fn render(page: &Path, hash: &str, screenshot: Option<&Path>) -> (String, String) {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = artefacts().join(format!("chromium-profile-{}-{run}", std::process::id()));
        let mut cmd = std::process::Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
        match screenshot {
            Some(file) => cmd.arg(format!("--screenshot={}", file.display())),
            None => cmd.arg("--dump-dom"),
        };
        let out = cmd
            .arg(format!("file://{}{hash}", page.display()))
            .output()
            .expect("chromium runs");
        let _ = std::fs::remove_dir_all(&profile);
        let text = outcome(&out).unwrap_or_else(|e| panic!("chromium failed: {e}"));
        (String::from_utf8_lossy(&out.stdout).to_string(), text)
    }

    fn attribute(dom: &str, name: &str) -> String {
        let at = dom
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("{name} in {dom}"));
        dom[at + name.len() + 2..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn check_report(page: &Path, inventory: &Value) {
        let html = std::fs::read_to_string(page).expect("page");
        for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
            assert!(
                !html.contains(external),
                "the page loads nothing: {external}"
            );
        }
        let (dom, log) = render(page, "", None);
        assert_eq!(
            attribute(&dom, "data-ready"),
            "true",
            "the script ran: {log}"
        );
        let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
        assert!(
            console.is_empty(),
            "the page logged to the console: {console:?}"
        );
        let hooks = inventory["hooks"].as_array().expect("hooks").len();
        assert_eq!(attribute(&dom, "data-shown"), hooks.to_string());
        assert_eq!(dom.matches("<tr class=\"hook\"").count(), hooks);
        let flagged = inventory["totals"]["flagged"].to_string();
        assert!(
            dom.contains(&format!("data-total=\"flagged\"><b>{flagged}</b>")),
            "the flagged total is the JSON's {flagged}"
        );
        for (flag, count) in inventory["totals"]["byFlag"].as_object().expect("byFlag") {
            assert!(
                dom.contains(&format!("data-name=\"{flag}\" data-count=\"{count}\"")),
                "the chart's {flag} bar says {count}"
            );
            // Filtering by the flag through the page's own control shows those hooks only.
            let (filtered, _) = render(page, &format!("#flag={flag}"), None);
            assert_eq!(
                attribute(&filtered, "data-shown"),
                count.to_string(),
                "filtered by {flag}"
            );
        }
        let (by_text, _) = render(page, "#filter=/dup", None);
        assert_eq!(
            attribute(&by_text, "data-shown"),
            "2",
            "the two copies of /dup"
        );
        let shot = artefacts().join("dc-report.png");
        let _ = std::fs::remove_file(&shot);
        render(page, "", Some(&shot));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "a screenshot of the page ({size} bytes) at {}",
            shot.display()
        );
    }
}

/// docs/migrating-to-cloud.md's example: a Data Center project's hooks exported as Cloud
/// manifests, applied, Ready, and on Cloud with the translated events.
#[tokio::test]
async fn a_data_center_project_moves_to_cloud() {
    let w = World::new("migrate", Flavor::DataCenter).await;
    w.ctl
        .owner_admins("DataCenter", &w.repository, &[ADMIN])
        .await
        .expect("project admin");
    w.ctl
        .repository("DataCenter", "PLAT/web", &[ADMIN], &[])
        .await
        .expect("repository");
    let cloud_repos = vec!["acme/api".to_owned(), "acme/web".to_owned()];
    w.ctl
        .repositories("Cloud", &cloud_repos, Some("PLT"), &[ADMIN])
        .await
        .expect("cloud repositories");
    let url = |name: &str| format!("https://ci.example.com/{name}");
    let client = client(&w);
    for (place, title, events, signed) in [
        (
            repo("PLAT/api"),
            "ci",
            &["repo:refs_changed", "pr:opened", "pr:from_ref_updated"][..],
            true,
        ),
        (
            repo("PLAT/api"),
            "chat",
            &["pr:merged", "pr:deleted", "pr:reviewer:approved"][..],
            false,
        ),
        (repo("PLAT/web"), "ci", &["repo:refs_changed"][..], false),
        (
            repo("PLAT/web"),
            "secrets",
            &["repo:secret_detected"][..],
            false,
        ),
        (
            Place::Project("PLAT".into()),
            "audit",
            &["repo:refs_changed", "mirror:repo_synchronized"][..],
            false,
        ),
    ] {
        let spec = HookSpec {
            title: title.to_owned(),
            url: url(&match &place {
                Place::Repository(r) => format!("{r}/{title}"),
                other => format!("{}/{title}", other.owner()),
            }),
            active: true,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: if signed {
                SecretChange::Set("ci-s3cret".to_owned().into())
            } else {
                SecretChange::Remove
            },
            skip_cert_verification: false,
        };
        client.create_hook(&place, &spec).await.expect("create");
    }
    let flags = "--to Cloud --map PLAT=acme/PLT --connection bitbucket-cloud --namespace ci";
    let runbook =
        std::fs::read_to_string(support::repo_path("docs/migrating-to-cloud.md")).expect("runbook");
    assert!(
        runbook.contains("--project PLAT \\\n  --to Cloud --map PLAT=acme/PLT --connection bitbucket-cloud --namespace ci"),
        "the runbook shows the command this test runs"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"))
        .args(["export", "--flavor", "DataCenter", "--base-url"])
        .arg(w.base_url())
        .args(["--project", "PLAT"])
        .args(
            flags
                .replace("--namespace ci", &format!("--namespace {}", w.ns))
                .split(' '),
        )
        .env("BITBUCKET_TOKEN", ADMIN)
        .output()
        .await
        .expect("export runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    for lost in [
        "pr:deleted",
        "repo:secret_detected",
        "mirror:repo_synchronized",
    ] {
        assert!(
            stderr.contains(&format!("Cloud has no event for {lost}; left out")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("(secrets): none of its events exists on Cloud; no manifest"),
        "{stderr}"
    );
    assert!(!stderr.contains("ci-s3cret"), "a secret is never printed");
    let manifests = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !manifests.contains("ci-s3cret"),
        "a secret is never printed"
    );
    assert_eq!(
        manifests.matches("kind: Webhook\n").count(),
        3,
        "{manifests}"
    );
    assert_eq!(
        manifests.matches("kind: WebhookSet\n").count(),
        1,
        "{manifests}"
    );

    // Step 2 and 4 of the runbook: the Cloud connection, the secret, apply, all Ready.
    w.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bitbucket-cloud-token}}\nstringData: {{token: {ADMIN}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: webhook-secret}}\nstringData: {{secret: ci-s3cret}}\n---\n\
         apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: BitbucketConnection\nmetadata: {{name: bitbucket-cloud}}\n\
         spec:\n  flavor: Cloud\n  baseURL: {}/2.0\n  auth: {{type: Bearer, secretRef: {{name: bitbucket-cloud-token}}}}\n",
        w.sim.base_url()
    ))
    .expect("cloud connection");
    w.apply(&manifests).expect("apply the export");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let all = w.webhooks().list(&Default::default()).await.expect("list");
        let cloud: Vec<_> = all
            .items
            .iter()
            .filter(|h| h.spec.connection_ref.name == "bitbucket-cloud")
            .collect();
        let ready = cloud.iter().filter(|h| is_ready(h)).count();
        // Three Webhooks and the set's two (acme/api, acme/web).
        if cloud.len() == 5 && ready == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ready} of {} Cloud Webhooks Ready",
            cloud.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut on_cloud: Vec<(String, String, Vec<String>, bool)> = w
        .ctl
        .hooks()
        .await
        .expect("hooks")
        .into_iter()
        .filter(|h| h["flavor"] == "Cloud")
        .map(|h| {
            let mut events: Vec<String> = h["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect();
            events.sort();
            (
                h["repository"].as_str().unwrap_or_default().to_owned(),
                h["url"].as_str().unwrap_or_default().to_owned(),
                events,
                h["secret"].is_string(),
            )
        })
        .collect();
    on_cloud.sort();
    let hook = |repo: &str, url: &str, events: &[&str], signed: bool| {
        (
            repo.to_owned(),
            format!("https://ci.example.com/{url}"),
            events.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>(),
            signed,
        )
    };
    assert_eq!(
        on_cloud,
        [
            hook(
                "acme/api",
                "PLAT/api/chat",
                &["pullrequest:approved", "pullrequest:fulfilled"],
                false
            ),
            hook(
                "acme/api",
                "PLAT/api/ci",
                &["pullrequest:created", "pullrequest:push", "repo:push"],
                true
            ),
            hook("acme/api", "PLAT/audit", &["repo:push"], false),
            hook("acme/web", "PLAT/audit", &["repo:push"], false),
            hook("acme/web", "PLAT/web/ci", &["repo:push"], false),
        ]
    );
}

/// Bad flags and files get a sentence and a non-zero exit, before any request.
#[tokio::test]
async fn bad_flags_and_files_say_what_is_wrong() {
    let dir = artefacts();
    let garbage = dir.join("not-a-state.json");
    std::fs::write(&garbage, "{").expect("write");
    let garbage = garbage.to_string_lossy().to_string();
    let base = ["--base-url", "http://127.0.0.1:9"];
    let cases: [(&[&str], &str); 6] = [
        (
            &["inventory", "--flavor", "Cloud", "--all-projects"],
            "--all-projects is for Data Center and Post Webhooks",
        ),
        (
            &[
                "inventory",
                "--flavor",
                "DataCenter",
                "--project",
                "PLAT",
                "--state",
                &garbage,
            ],
            "is not an inventory state file",
        ),
        (
            &[
                "inventory",
                "--flavor",
                "DataCenter",
                "--project",
                "PLAT",
                "--cluster",
            ],
            "--cluster: cannot reach the cluster",
        ),
        (
            &["inventory", "--flavor", "DataCenter"],
            "say what to read: --repository",
        ),
        (
            &[
                "export",
                "--flavor",
                "Cloud",
                "--workspace",
                "acme",
                "--to",
                "Cloud",
                "--map",
                "X=acme",
            ],
            "these are Cloud's already",
        ),
        (
            &[
                "export",
                "--flavor",
                "DataCenter",
                "--project",
                "PLAT",
                "--to",
                "Cloud",
                "--map",
                "PLAT",
            ],
            "--map \"PLAT\" is not PROJECT=workspace or PROJECT=workspace/PROJECT",
        ),
    ];
    for (args, said) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"))
            .args(args)
            .args(base)
            .env("BITBUCKET_TOKEN", "t0ken")
            .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("t0ken") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}
