//! Restarts and crashes on the real control plane, with the operator as its own process:
//!
//! 1. kube-apiserver killed and started again while the operator runs: the same process
//!    re-establishes its watches and serves what changed after, nothing lost or doubled;
//! 2. the simulator restarted with its state kept while Webhooks change: the operator
//!    waits it out and converges;
//! 3. the soak: the operator SIGKILLed at random moments while Webhooks are created,
//!    edited, moved between namespaces and deleted, with Bitbucket failing some requests
//!    (some before acting, some after acting with the answer lost); then convergence,
//!    and an audit of duplicates, orphans, missing and stale hooks (all must be 0).
//!
//! `make test` runs a short soak (`BBWO_SOAK_KILLS`, default 10, over
//! `BBWO_SOAK_WEBHOOKS`, default 60); `make soak` runs 50 kills over 200 Webhooks.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::{Flavor, Webhook};
use kube::Api;
use rand::seq::IndexedRandom;
use serde_json::json;
use support::{ADMIN, World};
use testenv::ControlPlane;

const REPOSITORIES: usize = 10;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// kubectl with `stdin`, without blocking the runtime the simulator serves on.
async fn kubectl(plane: &ControlPlane, args: &[&str], stdin: &str) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::from(plane.kubectl(args));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    support::outcome(&out)
}

/// One Webhook of the workload, as the test last wrote it.
#[derive(Clone, Debug)]
struct Desired {
    namespace: String,
    repository: String,
    version: u32,
}

fn url(name: &str, version: u32) -> String {
    format!("https://ci.example.com/{name}/v{version}")
}

fn manifest(name: &str, d: &Desired) -> String {
    let [push, pr] = ["repo:push", "pullrequest:created"];
    format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}, namespace: {}}}\n\
         spec:\n  connectionRef: {{name: bitbucket}}\n  repository: {}\n  url: {}\n  title: {name} v{}\n  \
         events: [\"{push}\", \"{pr}\"]\n",
        d.namespace,
        d.repository,
        url(name, d.version),
        d.version
    )
}

/// The operator for both namespaces, as a process the test can kill; each run's log is
/// appended to `<tmp>/<namespace>-operator.log`.
fn operator(w: &World, namespaces: &str) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(format!("{}-operator.log", w.ns)))
        .expect("log file");
    w.bare_operator_command(&[
        "--namespace",
        namespaces,
        "--cluster-connections=false",
        "--namespaced-private-targets",
        "--metrics-bind-address=127.0.0.1:0",
        &format!(
            "--log-level={}",
            std::env::var("BBWO_SOAK_LOG").unwrap_or_else(|_| "info".into())
        ),
    ])
    .stderr(log)
    .spawn()
    .expect("operator")
}

/// What Bitbucket holds against what the Webhooks ask for.
#[derive(Debug, Default, PartialEq)]
struct Audit {
    /// Hooks beyond the first with the same repository and URL.
    duplicates: usize,
    /// Hooks no Webhook asks for.
    orphans: usize,
    /// Webhooks without their hook.
    missing: usize,
    /// Hooks whose title differs from their Webhook's.
    stale: usize,
}

impl Audit {
    fn clean(&self) -> bool {
        *self == Audit::default()
    }
}

/// The audit, and a line for each thing wrong.
async fn audit(w: &World, namespaces: &[&str]) -> (Audit, Vec<String>) {
    let mut wanted: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut who: BTreeMap<(String, String), String> = BTreeMap::new();
    for ns in namespaces {
        let api: Api<Webhook> = Api::namespaced(w.client.clone(), ns);
        for h in api.list(&Default::default()).await.expect("list").items {
            let key = (
                h.spec.repository.to_lowercase(),
                h.spec.settings.url.clone(),
            );
            who.insert(
                key.clone(),
                format!(
                    "{ns}/{} (uid {}, status id {:?})",
                    h.metadata.name.clone().unwrap_or_default(),
                    h.metadata.uid.clone().unwrap_or_default(),
                    h.status.as_ref().and_then(|s| s.webhook_id.clone())
                ),
            );
            wanted.insert(key, h.spec.settings.title.clone().unwrap_or_default());
        }
    }
    let mut held: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for hook in w.ctl.hooks().await.expect("hooks") {
        let key = (
            hook["repository"].as_str().unwrap_or("").to_lowercase(),
            hook["url"].as_str().unwrap_or("").to_owned(),
        );
        held.entry(key)
            .or_default()
            .push(hook["title"].as_str().unwrap_or("").to_owned());
    }
    let mut a = Audit::default();
    let mut notes = Vec::new();
    for (key, titles) in &held {
        if titles.len() > 1 {
            a.duplicates += titles.len() - 1;
            notes.push(format!("duplicate {key:?}: {titles:?}"));
        }
        match wanted.get(key) {
            None => {
                a.orphans += 1;
                notes.push(format!("orphan {key:?}"));
            }
            Some(title) if titles.iter().any(|t| t != title) => {
                a.stale += 1;
                notes.push(format!("stale {key:?}: {titles:?}, wanted {title:?}"));
            }
            Some(_) => {}
        }
    }
    for key in wanted.keys().filter(|k| !held.contains_key(*k)) {
        a.missing += 1;
        notes.push(format!("missing {key:?}: {}", who[key]));
        // What happened to it, in the Events of every namespace.
        let name = who[key].split(['/', ' ']).nth(1).unwrap_or_default();
        let selector = format!("involvedObject.name={name}");
        let events = kubectl(
            w.plane,
            &["get", "events", "-A", "--field-selector", &selector, "--sort-by=.lastTimestamp", "-o",
              "custom-columns=NS:.metadata.namespace,TIME:.lastTimestamp,REASON:.reason,MESSAGE:.message"],
            "",
        )
        .await
        .unwrap_or_else(|e| e);
        notes.push(events);
    }
    (a, notes)
}

/// Waits until every Webhook of `namespaces` is Ready at its generation and none is
/// being deleted; the time it took.
async fn converge(w: &World, namespaces: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let mut pending = Vec::new();
        for ns in namespaces {
            let api: Api<Webhook> = Api::namespaced(w.client.clone(), ns);
            let Ok(list) = api.list(&Default::default()).await else {
                pending.push(format!("{ns}: cannot list"));
                continue;
            };
            for h in list.items {
                let ready = h.metadata.deletion_timestamp.is_none()
                    && h.status.as_ref().is_some_and(|s| {
                        s.observed_generation == h.metadata.generation
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                if !ready {
                    let why = h
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                        .map(|c| format!("{}: {}", c.reason, c.message))
                        .unwrap_or_else(|| "no status".into());
                    pending.push(format!(
                        "{ns}/{}{}: {why}",
                        h.metadata.name.unwrap_or_default(),
                        if h.metadata.deletion_timestamp.is_some() {
                            " (deleting)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        if pending.is_empty() {
            return started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  converging: {} not Ready after {:.0} s (e.g. {})",
                pending.len(),
                started.elapsed().as_secs_f64(),
                pending[0]
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "not converged after {limit:?}: {} pending: {pending:#?}",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// After a restart of something the operator depends on: the same operator process
/// (never restarted) converges, and the audit is clean; `what` heads the report line.
async fn survived(w: &World, namespaces: &[&str], op: &mut tokio::process::Child, what: &str) {
    let took = converge(w, namespaces, Duration::from_secs(90)).await;
    assert!(
        op.try_wait().expect("operator state").is_none(),
        "{what}: the operator process ended"
    );
    let (audit, notes) = audit(w, namespaces).await;
    println!(
        "{what} {:.1} s after the changes; {audit:?}",
        took.as_secs_f64()
    );
    assert!(audit.clean(), "{what}: {notes:#?}");
}

/// Cloud routes of hook writes, for faults that act and then lose the answer.
const WRITES: [&str; 3] = [
    "POST /2.0/repositories/{workspace}/{repo_slug}/hooks",
    "PUT /2.0/repositories/{workspace}/{repo_slug}/hooks/{uid}",
    "DELETE /2.0/repositories/{workspace}/{repo_slug}/hooks/{uid}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_kills_lose_nothing_and_duplicate_nothing() {
    let kills = setting("BBWO_SOAK_KILLS", 10);
    let count = setting("BBWO_SOAK_WEBHOOKS", 60);
    let mut w = World::standalone("soak-a", Flavor::Cloud).await;
    let other = w.plane.namespace("soak-b").expect("namespace");
    let namespaces = [w.ns.clone(), other.clone()];
    let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let repositories: Vec<String> = std::iter::once(w.repository.clone())
        .chain((1..REPOSITORIES).map(|i| format!("acme/repo-{i}")))
        .collect();
    w.ctl
        .repositories("Cloud", &repositories[1..], None, &[ADMIN])
        .await
        .expect("repositories");
    // The same connection in both namespaces; a budget that is not the bottleneck.
    let connection = w
        .connection_yaml("bitbucket", ADMIN)
        .replace("  auth:", "  rateLimit: {requestsPerHour: 36000}\n  auth:");
    for ns in &namespaces {
        kubectl(w.plane, &["apply", "-n", ns, "-f", "-"], &connection)
            .await
            .expect("connection");
    }
    let both = namespaces.join(",");
    let mut op = operator(&w, &both);
    w.wait_connection("bitbucket", "Ready", "True").await;

    // 1. kube-apiserver restarts under a running operator.
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    let plane = w.plane;
    let apply = |desired: &BTreeMap<String, Desired>, names: &[String]| {
        let docs: Vec<String> = names.iter().map(|n| manifest(n, &desired[n])).collect();
        let yaml = docs.join("---\n");
        async move { kubectl(plane, &["apply", "-f", "-"], &yaml).await }
    };
    // BBWO_SOAK_RESTARTS=0 skips the restarts (while working on the soak).
    if setting("BBWO_SOAK_RESTARTS", 1) == 1 {
        let first: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        for (i, name) in first.iter().enumerate() {
            desired.insert(
                name.clone(),
                Desired {
                    namespace: w.ns.clone(),
                    repository: repositories[i % REPOSITORIES].clone(),
                    version: 1,
                },
            );
        }
        apply(&desired, &first).await.expect("apply");
        converge(&w, &namespaces, Duration::from_secs(60)).await;
        tokio::task::spawn_blocking(move || plane.restart_apiserver(Duration::from_secs(3)))
            .await
            .expect("join")
            .expect("kube-apiserver restarted");
        for name in &first[..5] {
            desired.get_mut(name).expect("known").version += 1;
        }
        let more: Vec<String> = (20..25).map(|i| format!("r{i}")).collect();
        for (i, name) in more.iter().enumerate() {
            desired.insert(
                name.clone(),
                Desired {
                    namespace: w.ns.clone(),
                    repository: repositories[i % REPOSITORIES].clone(),
                    version: 1,
                },
            );
        }
        let changed: Vec<String> = first[..5].iter().chain(&more).cloned().collect();
        apply(&desired, &changed).await.expect("apply after");
        let gone: Vec<String> = first[15..].to_vec();
        for name in &gone {
            desired.remove(name);
        }
        let mut delete = vec!["delete", "webhook", "-n", namespaces[0], "--wait=false"];
        delete.extend(gone.iter().map(String::as_str));
        kubectl(plane, &delete, "").await.expect("delete");
        survived(
            &w,
            &namespaces,
            &mut op,
            "kube-apiserver restarted (3 s down): the same operator converged",
        )
        .await;

        // 2. Bitbucket restarts (state kept) while Webhooks change.
        let edited: Vec<String> = first[5..10].to_vec();
        for name in &edited {
            desired.get_mut(name).expect("known").version += 1;
        }
        w.ctl.reset_requests().await.expect("reset");
        let edits = apply(&desired, &edited);
        let (restarted, applied) = tokio::join!(w.sim.restart(Duration::from_secs(3)), edits);
        restarted.expect("simulator restarted");
        applied.expect("edits");
        survived(
            &w,
            &namespaces,
            &mut op,
            "Bitbucket restarted (3 s down, state kept) during 5 edits: the operator converged",
        )
        .await;
    }

    // 3. The soak: kills at random moments under faults while everything changes.
    w.ctl.reset_requests().await.expect("reset");
    let names: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        desired.insert(
            name.clone(),
            Desired {
                namespace: w.ns.clone(),
                repository: repositories[i % REPOSITORIES].clone(),
                version: 1,
            },
        );
    }
    let started = Instant::now();
    let (mut edits, mut moves, mut deletes, mut creates) = (0, 0, 0, 0);
    let mut killed = 0;
    let gap = if kills >= 50 {
        4_000..12_000
    } else {
        1_000..4_000
    };
    let mut next_kill = Instant::now() + Duration::from_millis(rand::random_range(gap.clone()));
    let mut next_fault = Instant::now();
    let mut fault = 0usize;
    let mut batches = names.chunks(20);
    while killed < kills {
        if Instant::now() >= next_kill {
            op.start_kill().expect("kill");
            let _ = op.wait().await;
            killed += 1;
            op = operator(&w, &both);
            next_kill = Instant::now() + Duration::from_millis(rand::random_range(gap.clone()));
        }
        if Instant::now() >= next_fault {
            // A third of the time Bitbucket is healthy, a third it fails 10% of requests
            // before acting, a third it loses the answer of 20% of writes after acting.
            let faults = match fault % 3 {
                0 => json!({}),
                1 => json!({ "errorRate": 0.1, "status": 503 }),
                _ => {
                    json!({ "errorRate": 0.2, "status": 502, "after": "status", "routes": WRITES })
                }
            };
            w.ctl.faults(faults).await.expect("faults");
            fault += 1;
            next_fault = Instant::now() + Duration::from_secs(3);
        }
        // First every Webhook is created, then edits, moves, deletes and re-creates.
        if let Some(batch) = batches.next() {
            creates += batch.len();
            apply(&desired, batch).await.expect("create");
        } else {
            let name = names.choose(&mut rand::rng()).expect("a name").clone();
            let roll = rand::random_range(0..100);
            match desired.get(&name).cloned() {
                None => {
                    // Its first repository: the deleted one may still be terminating (its
                    // hook being deleted), and the repository of an object cannot change.
                    let first = names.iter().position(|n| *n == name).unwrap_or(0);
                    let d = Desired {
                        namespace: namespaces[rand::random_range(0..2)].to_owned(),
                        repository: repositories[first % REPOSITORIES].clone(),
                        version: 1,
                    };
                    desired.insert(name.clone(), d);
                    apply(&desired, std::slice::from_ref(&name))
                        .await
                        .expect("re-create");
                    creates += 1;
                }
                Some(d) if roll < 55 => {
                    desired.get_mut(&name).expect("known").version = d.version + 1;
                    apply(&desired, std::slice::from_ref(&name))
                        .await
                        .expect("edit");
                    edits += 1;
                }
                Some(d) => {
                    kubectl(
                        plane,
                        &[
                            "delete",
                            "webhook",
                            "-n",
                            &d.namespace,
                            &name,
                            "--wait=false",
                        ],
                        "",
                    )
                    .await
                    .expect("delete");
                    if roll < 80 {
                        // A move: the same Webhook applied in the other namespace at once,
                        // as a GitOps tool does when a manifest moves.
                        let to = if d.namespace == namespaces[0] { 1 } else { 0 };
                        desired.insert(
                            name.clone(),
                            Desired {
                                namespace: namespaces[to].to_owned(),
                                ..d
                            },
                        );
                        apply(&desired, std::slice::from_ref(&name))
                            .await
                            .expect("move");
                        moves += 1;
                    } else {
                        desired.remove(&name);
                        deletes += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(rand::random_range(100..400))).await;
        }
    }
    let workload = started.elapsed();
    w.ctl.clear_faults().await.expect("clear");
    let took = converge(&w, &namespaces, Duration::from_secs(300)).await;
    let requests = w.ctl.count_where(|_, _| true).await.expect("requests");
    let (audit, notes) = audit(&w, &namespaces).await;
    let mut webhooks = 0;
    for ns in &namespaces {
        let api: Api<Webhook> = Api::namespaced(w.client.clone(), ns);
        webhooks += api
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len();
    }
    println!(
        "soak: {killed} kills in {:.0} s; {creates} creates, {edits} edits, {moves} moves, {deletes} deletes; \
         {webhooks} Webhooks at the end; {requests} requests; converged {:.1} s after the last kill; \
         duplicates {}, orphans {}, missing {}, stale {}",
        workload.as_secs_f64(),
        took.as_secs_f64(),
        audit.duplicates,
        audit.orphans,
        audit.missing,
        audit.stale
    );
    assert!(
        audit.clean(),
        "Bitbucket holds what the Webhooks ask for: {notes:#?}"
    );
    let _ = op.start_kill();
}
