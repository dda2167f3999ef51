//! The Webhook reconciler's branches without a cluster: the driver against a fake
//! Bitbucket (a `WebhookBackend` in memory) and a mocked Kubernetes API (tower-test, as
//! kube-rs' controller-rs tests its reconciler), each test in milliseconds. The
//! control-plane tests (tests/) run the same paths against a real API server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::fixture;
use crate::api::{
    BitbucketConnection, FINALIZER, Flavor, PENDING_CREATE_ANNOTATION, Webhook, WebhookStatus,
};
use crate::bitbucket::{
    self, Deleted, HookSpec, Identity, Place, RemoteHook, RepoRef, TestResult, WebhookBackend,
};
use crate::metrics::Metrics;
use crate::reconcile::conditions::{self, Outcome, Status};
use crate::reconcile::{Config, Context, Registry, Shared};

/// Bitbucket in memory: its hooks, and what was asked of it.
#[derive(Debug, Default)]
struct FakeBitbucket {
    hooks: Mutex<Vec<RemoteHook>>,
    calls: Mutex<Vec<String>>,
    /// The credential's budget lets nothing go (listings answer a local RateLimited).
    spent: std::sync::atomic::AtomicBool,
}

impl FakeBitbucket {
    fn with_hook(id: &str, url: &str) -> FakeBitbucket {
        let fake = FakeBitbucket::default();
        fake.lock_hooks().push(RemoteHook {
            id: id.to_owned(),
            title: "team/w".to_owned(),
            url: url.to_owned(),
            active: true,
            events: vec!["repo:push".to_owned()],
            ..RemoteHook::default()
        });
        fake
    }

    fn lock_hooks(&self) -> std::sync::MutexGuard<'_, Vec<RemoteHook>> {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn called(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn unsupported(what: &'static str) -> bitbucket::Error {
    bitbucket::Error::Unsupported {
        what,
        backend: "the fake",
    }
}

#[async_trait]
impl WebhookBackend for FakeBitbucket {
    fn flavor(&self) -> Flavor {
        Flavor::Cloud
    }
    async fn verify_credentials(&self) -> bitbucket::Result<Identity> {
        self.called("verify".to_owned());
        Ok(Identity {
            user: None,
            detail: None,
        })
    }
    fn identity_call(&self) -> &'static str {
        "GET /user"
    }
    async fn list_hooks(&self, place: &Place) -> bitbucket::Result<Vec<RemoteHook>> {
        self.called(format!("list {place}"));
        if self.spent.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(bitbucket::Error::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                local: true,
            });
        }
        // The repository's hooks; the workspace above it has none.
        match place {
            Place::Repository(_) => Ok(self.lock_hooks().clone()),
            _ => Ok(Vec::new()),
        }
    }
    async fn create_hook(&self, _: &Place, spec: &HookSpec) -> bitbucket::Result<RemoteHook> {
        let mut hooks = self.lock_hooks();
        let hook = RemoteHook {
            id: format!("{}", 100 + hooks.len()),
            title: spec.title.clone(),
            url: spec.url.clone(),
            active: spec.active,
            events: spec.events.clone(),
            ..RemoteHook::default()
        };
        hooks.push(hook.clone());
        drop(hooks);
        self.called(format!("create {}", hook.id));
        Ok(hook)
    }
    async fn update_hook(
        &self,
        _: &Place,
        current: &RemoteHook,
        _: &HookSpec,
    ) -> bitbucket::Result<RemoteHook> {
        self.called(format!("update {}", current.id));
        Ok(current.clone())
    }
    async fn delete_hook(&self, _: &Place, id: &str) -> bitbucket::Result<Deleted> {
        self.called(format!("delete {id}"));
        self.lock_hooks().retain(|h| h.id != id);
        Ok(Deleted::Removed)
    }
    async fn test_delivery(
        &self,
        _: &Place,
        _: &str,
        _: &str,
        _: bool,
    ) -> bitbucket::Result<TestResult> {
        Err(unsupported("test deliveries"))
    }
    async fn event_catalogue(&self) -> bitbucket::Result<Vec<String>> {
        Err(unsupported("the event catalogue"))
    }
    fn webhooks_page(&self, place: &Place) -> String {
        format!("https://bitbucket.example/{place}/webhooks")
    }
    async fn list_repositories(&self, _: &str, _: Option<&str>) -> bitbucket::Result<Vec<RepoRef>> {
        Err(unsupported("repository listings"))
    }
}

/// A request the mocked API server saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    fn is(&self, method: &str, path_end: &str) -> bool {
        self.method == method
            && self
                .path
                .split('?')
                .next()
                .is_some_and(|p| p.ends_with(path_end))
    }
}

type Answer = Box<dyn Fn(&Seen) -> Option<(u16, Value)> + Send + Sync>;

/// The Kubernetes API for one test: every request is recorded; `answer` says what to
/// return (None: the defaults below).
struct MockApi {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockApi {
    fn start(webhook: &Webhook, answer: Answer) -> (kube::Client, MockApi) {
        let (service, mut handle) =
            tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let stored = serde_json::to_value(webhook).expect("a Webhook as JSON");
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.to_string(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(seen.clone());
                let (status, body) =
                    answer(&seen).unwrap_or_else(|| default_answer(&seen, &stored));
                let response = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                    .expect("a response");
                send.send_response(response);
            }
        });
        (kube::Client::new(service, "team"), MockApi { seen })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What was written to the Webhook or said about it (reads of the Secret left out).
    fn writes(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method != "GET")
            .collect()
    }
}

/// The API server's answers: the credential Secret, the Webhook for its patches, an
/// Event echoed back.
fn default_answer(seen: &Seen, webhook: &Value) -> (u16, Value) {
    if seen.is("GET", "/secrets/bitbucket") {
        return (
            200,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "bitbucket", "namespace": "team", "uid": "s1", "resourceVersion": "1" },
                // "token"
                "data": { "token": "dG9rZW4=" },
            }),
        );
    }
    if seen.path.contains("/webhooks/") {
        return (200, webhook.clone());
    }
    if seen.method == "POST" && seen.path.contains("/events") {
        return (201, seen.body.clone());
    }
    (
        404,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not in this test" }),
    )
}

/// The connection "c" in namespace "team", verified for its generation.
fn connection() -> BitbucketConnection {
    serde_json::from_value(json!({
        "apiVersion": "bitbucket.hooks.dev/v1alpha1",
        "kind": "BitbucketConnection",
        "metadata": { "name": "c", "namespace": "team", "uid": "c1", "generation": 1 },
        "spec": { "flavor": "Cloud", "auth": { "type": "Bearer", "secretRef": { "name": "bitbucket" } } },
        "status": { "conditions": [{
            "type": "Ready", "status": "True", "reason": "Verified", "message": "ok",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
        }] },
    }))
    .expect("a connection")
}

/// Webhook "w" of namespace "team" (uid u1, generation 1), as the fixture makes it.
fn webhook(overrides: Value, annotations: &[(&str, &str)]) -> Webhook {
    let mut w = fixture::webhook(overrides, annotations);
    w.metadata.namespace = Some("team".to_owned());
    w.metadata.uid = Some("u1".to_owned());
    w.metadata.generation = Some(1);
    w.metadata.resource_version = Some("1".to_owned());
    w.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().expect("time")));
    w
}

/// A status that answers the spec: hook `id` in sync, written `age` ago.
fn current_status(id: &str, age: Duration) -> WebhookStatus {
    let now = jiff::Timestamp::now();
    let written = now - jiff::SignedDuration::try_from(age).expect("an age");
    let synced = conditions::condition(
        &[],
        conditions::SYNCED,
        &Outcome::new(Status::True, crate::api::Reason::InSync, "in sync"),
        Some(1),
        &Time(now),
    );
    WebhookStatus {
        observed_generation: Some(1),
        webhook_id: Some(id.to_owned()),
        last_sync_time: Some(Time(written)),
        conditions: vec![synced],
        ..WebhookStatus::default()
    }
}

/// A Context on the mocked API with the fake Bitbucket behind connection "c".
fn context(client: kube::Client, fake: Arc<FakeBitbucket>) -> Context {
    let config = Config::default();
    let metrics = Arc::new(Metrics::new());
    let mut shared = Shared::new(&config, metrics.clone());
    let backend: Arc<dyn WebhookBackend> = fake;
    shared.connections = Arc::new(
        Registry::new(false, config.retry.clone(), metrics)
            .with_connector(Arc::new(move |_| Ok(backend.clone()))),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "driver-test".to_owned(),
            instance: None,
        },
    );
    let (webhooks, _) = reflector::store::<DeserializeGuard<Webhook>>();
    let mut ctx = Context::new(client, recorder, config, webhooks, &shared);
    let (connections, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(connection()));
    ctx.connection_cache = Some(connections);
    ctx
}

async fn reconcile(w: &Webhook, ctx: &Arc<Context>) -> Result<Action, crate::reconcile::Error> {
    super::reconcile(Arc::new(DeserializeGuard(Ok(w.clone()))), ctx.clone()).await
}

/// The seconds of a requeue (None: waits for a change).
fn requeue(action: &Action) -> Option<f64> {
    let text = format!("{action:?}");
    let (_, rest) = text.split_once("Some(")?;
    let value = rest.split(')').next()?;
    let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "ms" => number / 1000.0,
        "µs" => number / 1e6,
        "ns" => number / 1e9,
        _ => number,
    })
}

const URL: &str = "https://ci.example.com/hook";

#[tokio::test]
async fn a_new_webhook_is_created_behind_its_mark_and_the_mark_cleared() {
    let w = webhook(json!({}), &[]);
    let (client, api) = MockApi::start(&w, Box::new(|_| None));
    let fake = Arc::new(FakeBitbucket::default());
    let ctx = Arc::new(context(client, fake.clone()));
    let action = reconcile(&w, &ctx).await.expect("reconciled");
    // The workspace's own hooks are read for the inherited-duplicate check.
    assert_eq!(
        fake.calls(),
        ["list team/app", "create 100", "list workspace team"]
    );
    let writes = api.writes();
    let patches: Vec<&Seen> = writes.iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(patches.len(), 3, "{writes:#?}");
    // First the finalizer and the mark, then the status with the id, then the mark goes.
    assert_eq!(
        patches[0].body["metadata"]["finalizers"],
        json!([FINALIZER])
    );
    assert_eq!(
        patches[0].body["metadata"]["annotations"][PENDING_CREATE_ANNOTATION],
        json!(URL)
    );
    assert!(patches[1].is("PATCH", "/webhooks/w/status"));
    assert_eq!(patches[1].body["status"]["webhookId"], json!("100"));
    assert_eq!(
        patches[2].body,
        json!({ "metadata": { "annotations": { PENDING_CREATE_ANNOTATION: null } } })
    );
    let events: Vec<&Seen> = writes.iter().filter(|s| s.method == "POST").collect();
    assert!(
        events.iter().any(|e| e.body["reason"] == "Created"),
        "{events:#?}"
    );
    assert!(requeue(&action).is_some_and(|s| s > 0.0));
}

#[tokio::test]
async fn a_mark_left_by_a_crash_is_cleared_once_the_id_is_in_status() {
    // The hook was created and its id recorded; the process died before the mark went.
    let mut w = webhook(json!({}), &[(PENDING_CREATE_ANNOTATION, URL)]);
    w.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    w.status = Some(current_status("100", Duration::from_secs(10)));
    let (client, api) = MockApi::start(&w, Box::new(|_| None));
    let fake = Arc::new(FakeBitbucket::with_hook("100", URL));
    let ctx = Arc::new(context(client, fake.clone()));
    reconcile(&w, &ctx).await.expect("reconciled");
    assert_eq!(
        fake.calls(),
        ["list team/app", "list workspace team"],
        "adopted from the listing, not created again"
    );
    let cleared = api.writes().into_iter().any(|s| {
        s.is("PATCH", "/webhooks/w")
            && s.body["metadata"]["annotations"][PENDING_CREATE_ANNOTATION] == Value::Null
            && s.body["metadata"]["annotations"]
                .as_object()
                .is_some_and(|a| a.contains_key(PENDING_CREATE_ANNOTATION))
    });
    assert!(cleared, "{:#?}", api.writes());
}

#[tokio::test]
async fn a_current_status_after_a_restart_is_trusted_until_the_slot() {
    let mut w = webhook(json!({}), &[]);
    w.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    w.status = Some(current_status("100", Duration::from_secs(10)));
    let (client, api) = MockApi::start(&w, Box::new(|_| None));
    let fake = Arc::new(FakeBitbucket::with_hook("100", URL));
    let ctx = Arc::new(context(client, fake.clone()));
    for _ in 0..2 {
        let action = reconcile(&w, &ctx).await.expect("reconciled");
        let wait = requeue(&action).expect("requeued for the slot");
        assert!(wait > 0.0 && wait <= 600.0, "{wait}");
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert!(api.seen().is_empty(), "{:#?}", api.seen());
    // An old status is not trusted: the Webhook is compared with Bitbucket.
    let mut old = w.clone();
    old.metadata.uid = Some("u2".to_owned());
    old.status = Some(current_status("100", Duration::from_secs(3 * 3600)));
    reconcile(&old, &ctx).await.expect("reconciled");
    assert_eq!(fake.calls(), ["list team/app", "list workspace team"]);
}

#[tokio::test]
async fn periodic_work_steps_back_when_every_permit_is_taken_and_a_change_does_not() {
    let mut w = webhook(json!({}), &[]);
    w.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    // Current, but too old to be trusted: periodic work.
    w.status = Some(current_status("100", Duration::from_secs(3 * 3600)));
    let (client, api) = MockApi::start(&w, Box::new(|_| None));
    let fake = Arc::new(FakeBitbucket::with_hook("100", URL));
    let mut ctx = context(client, fake.clone());
    ctx.periodic = Arc::new(tokio::sync::Semaphore::new(0));
    let ctx = Arc::new(ctx);
    let action = reconcile(&w, &ctx).await.expect("reconciled");
    let back = super::priority::step_back(&crate::reconcile::object_key(&w));
    assert_eq!(action, Action::requeue(back));
    assert!(fake.calls().is_empty() && api.seen().is_empty());
    // An edited Webhook never waits for a permit.
    let mut edited = w.clone();
    edited.metadata.generation = Some(2);
    reconcile(&edited, &ctx).await.expect("reconciled");
    assert_eq!(fake.calls(), ["list team/app", "list workspace team"]);
}

#[tokio::test]
async fn periodic_work_the_budget_defers_keeps_its_status_and_comes_back_at_the_slot() {
    let mut w = webhook(json!({}), &[]);
    w.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    w.status = Some(current_status("100", Duration::from_secs(3 * 3600)));
    let (client, api) = MockApi::start(&w, Box::new(|_| None));
    let fake = Arc::new(FakeBitbucket::with_hook("100", URL));
    fake.spent.store(true, std::sync::atomic::Ordering::Relaxed);
    let ctx = Arc::new(context(client, fake.clone()));
    let action = reconcile(&w, &ctx).await.expect("reconciled");
    let wait = requeue(&action).expect("requeued");
    let slot = crate::slots::until_slot(
        Duration::from_secs(600),
        &crate::identity::ConnectionPlace::of(&w),
    );
    assert!(
        wait >= slot.as_secs_f64() && wait <= slot.as_secs_f64() + 2.5,
        "at the repository's slot ({slot:?}), not in seconds: {wait}"
    );
    assert!(
        api.writes().is_empty(),
        "status stands: {:#?}",
        api.writes()
    );
    // A change the budget cannot serve now says so.
    let mut edited = w.clone();
    edited.metadata.generation = Some(2);
    reconcile(&edited, &ctx).await.expect("reconciled");
    assert!(
        api.writes()
            .iter()
            .any(|s| s.body.to_string().contains("RateLimited")),
        "{:#?}",
        api.writes()
    );
}

#[tokio::test]
async fn a_write_refused_as_stale_reads_the_webhook_again_and_goes_on_from_there() {
    let w = webhook(json!({}), &[]);
    let mut fresh = w.clone();
    fresh.metadata.resource_version = Some("2".to_owned());
    let fresh_json = serde_json::to_value(&fresh).expect("json");
    let refused = Arc::new(Mutex::new(false));
    let answer: Answer = Box::new(move |seen| {
        if seen.is("PATCH", "/webhooks/w") {
            let mut refused = refused.lock().unwrap_or_else(|p| p.into_inner());
            if !*refused {
                *refused = true;
                return Some((
                    409,
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified" }),
                ));
            }
        }
        seen.is("GET", "/webhooks/w")
            .then(|| (200, fresh_json.clone()))
    });
    let (client, api) = MockApi::start(&w, answer);
    let fake = Arc::new(FakeBitbucket::default());
    let ctx = Arc::new(context(client, fake.clone()));
    reconcile(&w, &ctx)
        .await
        .expect("reconciled from the fresh copy");
    assert!(
        api.seen().iter().any(|s| s.is("GET", "/webhooks/w")),
        "read again"
    );
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.starts_with("create"))
            .count(),
        1,
        "{:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn a_conflicting_webhook_says_so_and_asks_nothing_of_bitbucket() {
    let mut older = webhook(json!({}), &[]);
    older.metadata.name = Some("first".to_owned());
    older.metadata.uid = Some("u0".to_owned());
    older.metadata.creation_timestamp = Some(Time("2025-01-01T00:00:00Z".parse().expect("time")));
    let w = webhook(json!({}), &[]);
    let (client, api) = MockApi::start(&w, Box::new(|_| None));
    let fake = Arc::new(FakeBitbucket::default());
    let ctx = Arc::new(context(client, fake.clone()));
    ctx.claims.upsert(&older);
    ctx.claims.upsert(&w);
    reconcile(&w, &ctx).await.expect("reconciled");
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    let status = api
        .writes()
        .into_iter()
        .find(|s| s.is("PATCH", "/webhooks/w/status"))
        .expect("a status");
    let synced = status.body["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Synced"))
        .cloned()
        .expect("Synced");
    assert_eq!(
        (synced["status"].clone(), synced["reason"].clone()),
        (json!("False"), json!("Conflict"))
    );
    assert!(
        api.writes().iter().all(|s| !s.is("PATCH", "/webhooks/w")),
        "no finalizer for a hook that is not its"
    );
}

#[tokio::test]
async fn deletion_deletes_the_hook_or_leaves_it_as_the_policy_says_then_releases() {
    for (policy, deleted) in [("Delete", true), ("Orphan", false)] {
        let mut w = webhook(json!({ "deletionPolicy": policy }), &[]);
        w.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        w.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        w.status = Some(current_status("100", Duration::from_secs(10)));
        let (client, api) = MockApi::start(&w, Box::new(|_| None));
        let fake = Arc::new(FakeBitbucket::with_hook("100", URL));
        let ctx = Arc::new(context(client, fake.clone()));
        let action = reconcile(&w, &ctx).await.expect("cleaned up");
        assert_eq!(action, Action::await_change());
        let expected: &[&str] = if deleted { &["delete 100"] } else { &[] };
        assert_eq!(fake.calls(), expected, "{policy}");
        let released = api
            .writes()
            .into_iter()
            .any(|s| s.is("PATCH", "/webhooks/w") && s.body["metadata"]["finalizers"] == json!([]));
        assert!(released, "{policy}: {:#?}", api.writes());
    }
}
