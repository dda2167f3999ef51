//! Shared by the integration tests: the control plane, one operator for the test binary,
//! and per-test namespaces with their own simulator.

#![allow(dead_code)]

pub mod helm;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bitbucket_sim::Running;
use bitbucket_sim::client::SimClient;
use bitbucket_webhook_operator::api::{Flavor, Webhook};
use bitbucket_webhook_operator::reconcile::Config;
use kube::Api;
use testenv::ControlPlane;

/// Where ClusterBitbucketConnection credentials live in the tests.
pub const OPERATOR_NAMESPACE: &str = "bbwo-system";
/// Short, so drift tests do not wait ten minutes.
pub const RESYNC: Duration = Duration::from_secs(4);
/// How often the tests' operator reads Data Center statistics.
pub const HEALTH: Duration = Duration::from_secs(2);
/// The pause after a Bitbucket 429 without Retry-After, in integration tests.
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(3);

static METRICS_ADDR: OnceLock<std::net::SocketAddr> = OnceLock::new();

/// The operator's /healthz, /readyz and /metrics, once it runs.
pub fn metrics_url() -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = METRICS_ADDR.get() {
            return format!("http://{addr}");
        }
        assert!(
            Instant::now() < deadline,
            "the operator's HTTP server never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything the operator (and every library it uses) logged, at trace level.
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn log_buffer() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(Default::default)
}

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A command's stdout and stderr together: Ok when it succeeded, Err otherwise.
pub fn outcome(out: &std::process::Output) -> Result<String, String> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A client of `flavor` at `base_url` with the admin token and a budget out of the way,
/// for making hooks by hand.
pub fn admin_client(
    flavor: Flavor,
    base_url: &str,
) -> std::sync::Arc<dyn bitbucket_webhook_operator::bitbucket::WebhookBackend> {
    use bitbucket_webhook_operator::bitbucket::{
        Budget, ConnectionConfig, Credentials, RetryPolicy, TlsOptions, connect,
    };
    connect(ConnectionConfig {
        flavor,
        base_url: Some(base_url.to_owned()),
        credentials: Credentials::Bearer(ADMIN.to_owned().into()),
        tls: TlsOptions::default(),
        budget: std::sync::Arc::new(Budget::per_hour(10_000_000)),
        retry: RetryPolicy::default(),
        observer: None,
    })
    .expect("client")
}

/// Whether the Webhook's Ready condition is True (whatever generation it describes).
pub fn is_ready(h: &Webhook) -> bool {
    h.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn plane() -> &'static ControlPlane {
    testenv::shared(&repo_path("crds"))
}

/// Starts the operator once per test binary, on its own thread and runtime (test
/// runtimes end with their test).
pub fn operator() -> &'static ControlPlane {
    static STARTED: OnceLock<()> = OnceLock::new();
    let plane = plane();
    STARTED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
        let _ = plane.kubectl_ok(["create", "namespace", OPERATOR_NAMESPACE]);
        let kubeconfig = plane.kubeconfig().to_owned();
        std::thread::Builder::new()
            .name("operator".into())
            .spawn(move || {
                let runtime = tokio::runtime::Runtime::new().expect("operator runtime");
                runtime.block_on(async move {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
                    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                        .await
                        .expect("config");
                    let client = kube::Client::try_from(config).expect("client");
                    let config = Config {
                        resync_period: RESYNC,
                        list_ttl: RESYNC.mul_f64(0.9),
                        health_period: HEALTH,
                        cluster_secret_namespace: OPERATOR_NAMESPACE.to_owned(),
                        retry: bitbucket_webhook_operator::bitbucket::RetryPolicy {
                            max_retries: 2,
                            min_delay: Duration::from_millis(50),
                            max_delay: Duration::from_secs(1),
                            rate_limit_pause: RATE_LIMIT_PAUSE,
                            queue_patience: Duration::from_secs(120),
                        },
                        // The simulator and the receivers are on loopback.
                        namespaced_private_targets: true,
                        ..Config::default()
                    };
                    let metrics =
                        std::sync::Arc::new(bitbucket_webhook_operator::metrics::Metrics::new());
                    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("metrics port");
                    let _ = METRICS_ADDR.set(listener.local_addr().expect("addr"));
                    tokio::spawn(bitbucket_webhook_operator::runtime::serve(
                        listener,
                        metrics.clone(),
                        ready.clone(),
                        None,
                        std::future::pending(),
                    ));
                    bitbucket_webhook_operator::runtime::run(
                        client,
                        config,
                        metrics,
                        ready,
                        std::future::pending(),
                    )
                    .await;
                });
            })
            .expect("operator thread");
    });
    plane
}

pub fn flavor_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Cloud => "Cloud",
        Flavor::DataCenter => "DataCenter",
        Flavor::PostWebhooks => "PostWebhooks",
    }
}

/// The message of a Webhook's Synced condition ("" without one).
pub fn synced_message(h: Webhook) -> String {
    h.status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Synced"))
        .map(|c| c.message)
        .unwrap_or_default()
}

/// One test's world: a namespace, a simulator with a repository, a connection to it.
pub struct World {
    pub plane: &'static ControlPlane,
    pub ns: String,
    pub sim: Running,
    pub ctl: SimClient,
    pub flavor: Flavor,
    pub repository: String,
    pub client: kube::Client,
}

pub const ADMIN: &str = "admin-token";
pub const READER: &str = "reader-token";

impl World {
    /// A world served by the test binary's shared operator.
    pub async fn new(test: &str, flavor: Flavor) -> World {
        World::on(operator(), test, flavor).await
    }

    /// A world without the shared operator (the test runs its own).
    pub async fn standalone(test: &str, flavor: Flavor) -> World {
        World::on(plane(), test, flavor).await
    }

    async fn on(plane: &'static ControlPlane, test: &str, flavor: Flavor) -> World {
        let ns = plane.namespace(test).expect("namespace");
        let sim = bitbucket_sim::start().await.expect("simulator");
        let ctl = sim.control();
        ctl.token(ADMIN, "alice").await.expect("token");
        ctl.token(READER, "bob").await.expect("token");
        let repository = match flavor {
            Flavor::Cloud => "acme/api".to_owned(),
            _ => "PLAT/api".to_owned(),
        };
        ctl.repository(flavor_name(flavor), &repository, &[ADMIN], &[READER])
            .await
            .expect("repository");
        let client = plane.client().await.expect("client");
        let world = World {
            plane,
            ns,
            sim,
            ctl,
            flavor,
            repository,
            client,
        };
        world
            .apply(&world.connection_yaml("bitbucket", ADMIN))
            .expect("connection");
        world
    }

    pub fn base_url(&self) -> String {
        match self.flavor {
            Flavor::Cloud => format!("{}/2.0", self.sim.base_url()),
            _ => self.sim.base_url(),
        }
    }

    /// A Secret and a BitbucketConnection named `name` using `token`.
    pub fn connection_yaml(&self, name: &str, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-token}}\nstringData: {{token: {token}}}\n---\n\
             apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: BitbucketConnection\nmetadata: {{name: {name}}}\n\
             spec:\n  flavor: {}\n  baseURL: {}\n  auth: {{type: Bearer, secretRef: {{name: {name}-token}}}}\n",
            flavor_name(self.flavor),
            self.base_url()
        )
    }

    /// The flavor's push and pull-request-opened events.
    pub fn events(&self) -> [&'static str; 2] {
        match self.flavor {
            Flavor::Cloud => ["repo:push", "pullrequest:created"],
            Flavor::DataCenter => ["repo:refs_changed", "pr:opened"],
            Flavor::PostWebhooks => ["ABSTRACT_REPOSITORY_REFS_CHANGED", "PULL_REQUEST_OPENED"],
        }
    }

    /// A Webhook manifest; `extra` lines are added under spec (two-space indented).
    pub fn webhook_yaml(&self, name: &str, url: &str, extra: &str) -> String {
        let [push, pr] = self.events();
        format!(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\nspec:\n  \
             connectionRef: {{name: bitbucket}}\n  repository: {}\n  url: {url}\n  events: [\"{push}\", \"{pr}\"]\n{extra}",
            self.repository
        )
    }

    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        let out = self
            .plane
            .kubectl_stdin(["apply", "-n", &self.ns, "-f", "-"], yaml)
            .map_err(|e| e.to_string())?;
        outcome(&out)
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.plane.kubectl_ok(all).map_err(|e| e.to_string())
    }

    /// The operator binary as its own process, watching only this test's namespace;
    /// add flags and environment, then spawn. Killed when dropped.
    pub fn operator_command(&self) -> tokio::process::Command {
        self.bare_operator_command(&[
            "--namespace",
            &self.ns,
            "--cluster-connections=false",
            // The simulator is on loopback.
            "--namespaced-private-targets",
        ])
    }

    /// `bitbucket-webhook-operator run` with only `args`, quiet, killed when dropped.
    pub fn bare_operator_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_bitbucket-webhook-operator"));
        cmd.arg("run")
            .args(args)
            .env("KUBECONFIG", self.plane.kubeconfig())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Names of the Events with this reason in the test's namespace, one per line.
    pub fn event_names(&self, reason: &str) -> String {
        self.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason}"),
            "-o",
            "name",
        ])
        .expect("events")
    }

    pub fn webhooks(&self) -> Api<Webhook> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until `check` holds for the Webhook, or fails with its last state.
    pub async fn wait_webhook(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Webhook) -> bool,
    ) -> Webhook {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let current = self.webhooks().get_opt(name).await.ok().flatten();
            if let Some(w) = &current
                && check(w)
            {
                return w.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: timed out waiting for {what}; last state: {:#?}",
                    current.map(|w| w.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for a condition with this status and reason, at the current generation.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Webhook {
        self.wait_webhook(name, &format!("{type_}={status} ({reason})"), |w| {
            let s = w.status.as_ref();
            s.is_some_and(|s| {
                s.observed_generation == w.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == type_ && c.status == status && c.reason == reason)
            })
        })
        .await
    }

    /// The condition of a type of the BitbucketConnection `name`, once it has this status:
    /// (reason, message).
    pub async fn wait_connection(&self, name: &str, type_: &str, status: &str) -> (String, String) {
        let found = self
            .wait_connection_status(name, &format!("{type_}={status}"), |s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == type_)
                    .is_some_and(|c| c.status == status)
            })
            .await;
        let c = found
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .expect("the condition just seen");
        (c.reason, c.message)
    }

    /// The status of the BitbucketConnection `name` once `check` holds for it.
    pub async fn wait_connection_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&bitbucket_webhook_operator::api::ConnectionStatus) -> bool,
    ) -> bitbucket_webhook_operator::api::ConnectionStatus {
        let api: Api<bitbucket_webhook_operator::api::BitbucketConnection> =
            Api::namespaced(self.client.clone(), &self.ns);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status);
            if let Some(s) = &found
                && check(s)
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{name}: timed out waiting for {what}; last {found:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) -> Webhook {
        self.wait_condition(name, "Ready", "True", "Ready").await
    }

    pub async fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.webhooks().get_opt(name).await.ok().flatten().is_some() {
            assert!(Instant::now() < deadline, "{name} was never deleted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The hooks the simulator holds for this test's repository.
    pub async fn hooks(&self) -> Vec<serde_json::Value> {
        self.ctl
            .hooks()
            .await
            .expect("hooks")
            .into_iter()
            .filter(|h| {
                h["repository"]
                    .as_str()
                    .is_some_and(|r| r.eq_ignore_ascii_case(&self.repository))
            })
            .collect()
    }

    /// Bitbucket writes (POST, PUT, DELETE on webhook routes) seen so far.
    pub async fn writes(&self) -> u64 {
        let mut n = 0;
        for method in ["POST", "PUT", "DELETE"] {
            n += self.ctl.count(method, "hooks").await.unwrap_or(0)
                + self.ctl.count(method, "configurations").await.unwrap_or(0);
        }
        n
    }

    /// Asserts the simulator holds exactly the hooks the namespace's Webhooks record.
    pub async fn assert_no_strays(&self) {
        let recorded: std::collections::BTreeSet<String> = self
            .webhooks()
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter(|w| {
                w.spec.settings.deletion_policy
                    == bitbucket_webhook_operator::api::DeletionPolicy::Delete
            })
            .filter_map(|w| w.status.and_then(|s| s.webhook_id))
            .collect();
        let held: std::collections::BTreeSet<String> = self
            .hooks()
            .await
            .iter()
            .filter_map(|h| h["id"].as_str().map(str::to_owned))
            .collect();
        assert!(
            held.is_superset(&recorded),
            "recorded {recorded:?}, Bitbucket holds {held:?}"
        );
        let mut urls: Vec<String> = self
            .hooks()
            .await
            .iter()
            .filter_map(|h| h["url"].as_str().map(str::to_owned))
            .collect();
        let before = urls.len();
        urls.sort();
        urls.dedup();
        assert_eq!(before, urls.len(), "no two hooks with one URL: {urls:?}");
    }
}
