//! The Bitbucket clients against `bitbucket-sim`, for each backend: every operation,
//! pagination, each error class, rate limits, retries and the request budget.

use std::sync::Arc;
use std::time::Duration;

use bitbucket_sim::Running;
use bitbucket_sim::client::SimClient;
use bitbucket_webhook_operator::api::Flavor;
use bitbucket_webhook_operator::bitbucket::{
    Budget, ConnectionConfig, Credentials, Deleted, Error, HookSpec, Place, RepoRef, RetryPolicy,
    SecretChange, SecretState, TlsOptions, WebhookBackend, connect,
};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token";
const READER: &str = "reader-token";
const FLAVORS: [Flavor; 3] = [Flavor::Cloud, Flavor::DataCenter, Flavor::PostWebhooks];

struct Setup {
    sim: Running,
    ctl: SimClient,
    flavor: Flavor,
    repo: Place,
    repository: RepoRef,
}

fn flavor_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Cloud => "Cloud",
        Flavor::DataCenter => "DataCenter",
        Flavor::PostWebhooks => "PostWebhooks",
    }
}

async fn setup(flavor: Flavor) -> Setup {
    let sim = bitbucket_sim::start().await.expect("simulator starts");
    let ctl = sim.control();
    ctl.token(ADMIN, "alice").await.expect("token");
    ctl.token(READER, "bob").await.expect("token");
    let repo = match flavor {
        Flavor::Cloud => "acme/api",
        _ => "PLAT/api",
    };
    ctl.repository(flavor_name(flavor), repo, &[ADMIN], &[READER])
        .await
        .expect("repository");
    Setup {
        sim,
        ctl,
        flavor,
        repo: Place::Repository(RepoRef::parse(repo).expect("repo")),
        repository: RepoRef::parse(repo).expect("repo"),
    }
}

/// The pause after a 429 without Retry-After, longer than the client waits by itself.
const PAUSE: Duration = Duration::from_secs(3);

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
        rate_limit_pause: PAUSE,
        queue_patience: Duration::from_secs(2),
    }
}

impl Setup {
    /// A client of this setup's flavor and simulator with these credentials.
    fn connect_as(
        &self,
        credentials: Credentials,
        budget: Arc<Budget>,
        retry: RetryPolicy,
    ) -> Arc<dyn WebhookBackend> {
        let base = match self.flavor {
            Flavor::Cloud => format!("{}/2.0", self.sim.base_url()),
            _ => self.sim.base_url(),
        };
        connect(ConnectionConfig {
            flavor: self.flavor,
            base_url: Some(base),
            credentials,
            tls: TlsOptions::default(),
            budget,
            retry,
            observer: None,
        })
        .expect("client")
    }

    /// A Cloud API token's client (Basic: the account's email and the token).
    fn api_token_client(
        &self,
        email: &str,
        token: &str,
        retry: RetryPolicy,
    ) -> Arc<dyn WebhookBackend> {
        let credentials = Credentials::Basic {
            username: email.into(),
            password: token.to_owned().into(),
        };
        self.connect_as(credentials, Arc::new(Budget::per_hour(1000)), retry)
    }

    fn client_with(&self, token: &str, budget: Budget) -> Arc<dyn WebhookBackend> {
        // Cloud and Post Webhooks with Bearer tokens, Data Center with Basic.
        let credentials = match self.flavor {
            Flavor::DataCenter => Credentials::Basic {
                username: if token == READER {
                    "bob".into()
                } else {
                    "alice".into()
                },
                password: token.to_owned().into(),
            },
            _ => Credentials::Bearer(token.to_owned().into()),
        };
        self.connect_as(credentials, Arc::new(budget), fast_retries())
    }

    fn client(&self, token: &str) -> Arc<dyn WebhookBackend> {
        self.client_with(token, Budget::per_hour(100_000))
    }

    /// A part of the list route's template, for request counts.
    fn list_route(&self) -> &'static str {
        match self.flavor {
            Flavor::PostWebhooks => "configurations",
            _ => "hooks",
        }
    }

    fn events(&self) -> Vec<String> {
        match self.flavor {
            Flavor::Cloud => vec!["repo:push".into(), "pullrequest:created".into()],
            Flavor::DataCenter => vec!["repo:refs_changed".into(), "pr:opened".into()],
            Flavor::PostWebhooks => vec![
                "ABSTRACT_REPOSITORY_REFS_CHANGED".into(),
                "PULL_REQUEST_OPENED".into(),
            ],
        }
    }

    fn spec(&self, url: &str) -> HookSpec {
        HookSpec {
            title: "CI trigger".into(),
            url: url.into(),
            active: true,
            events: self.events(),
            secret: SecretChange::Keep,
            skip_cert_verification: false,
        }
    }
}

#[tokio::test]
async fn every_operation_round_trips_on_each_backend() {
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        let client = s.client(ADMIN);
        let who = client.verify_credentials().await.expect("verify");
        assert_eq!(who.user.as_deref(), Some("alice"), "{flavor:?}");
        assert!(client.list_hooks(&s.repo).await.expect("list").is_empty());

        let created = client
            .create_hook(&s.repo, &s.spec("https://ci.example.com/a"))
            .await
            .expect("create");
        assert_eq!(created.url, "https://ci.example.com/a");
        assert_eq!(created.events, s.events());
        let listed = client.list_hooks(&s.repo).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, created.id);
        assert_eq!(listed[0].title, "CI trigger");

        let mut changed = s.spec("https://ci.example.com/b");
        changed.title = "Renamed".into();
        changed.active = false;
        changed.skip_cert_verification = true;
        changed.events = s.events()[..1].to_vec();
        let updated = client
            .update_hook(&s.repo, &created, &changed)
            .await
            .expect("update");
        assert_eq!(updated.id, created.id, "{flavor:?}: updated in place");
        assert_eq!(
            (
                updated.url.as_str(),
                updated.title.as_str(),
                updated.active,
                updated.skip_cert_verification
            ),
            ("https://ci.example.com/b", "Renamed", false, true)
        );
        assert_eq!(updated.events, s.events()[..1].to_vec());

        assert_eq!(
            client
                .delete_hook(&s.repo, &created.id)
                .await
                .expect("delete"),
            Deleted::Removed
        );
        assert_eq!(
            client
                .delete_hook(&s.repo, &created.id)
                .await
                .expect("delete"),
            Deleted::AlreadyGone
        );
        assert!(client.list_hooks(&s.repo).await.expect("list").is_empty());
        assert!(
            s.ctl.hooks().await.expect("hooks").is_empty(),
            "{flavor:?}: nothing left"
        );

        let catalogue = client.event_catalogue().await.expect("catalogue");
        assert!(
            s.events().iter().all(|e| catalogue.contains(e)),
            "{flavor:?}: {catalogue:?}"
        );
        assert!(client.webhooks_page(&s.repo).contains("api"), "{flavor:?}");
    }
}

#[tokio::test]
async fn secrets_are_set_kept_and_removed() {
    for flavor in [Flavor::Cloud, Flavor::DataCenter] {
        let s = setup(flavor).await;
        let client = s.client(ADMIN);
        let mut spec = s.spec("https://ci.example.com/a");
        spec.secret = SecretChange::Set("first-secret".to_owned().into());
        let hook = client.create_hook(&s.repo, &spec).await.expect("create");
        let secret_of = |state: &SecretState| match state {
            SecretState::Unset => "unset".to_owned(),
            SecretState::Set => "set".to_owned(),
            SecretState::Known(s) => secrecy::ExposeSecret::expose_secret(s).to_owned(),
        };
        let expected = if flavor == Flavor::Cloud {
            "set"
        } else {
            "first-secret"
        };
        assert_eq!(secret_of(&hook.secret), expected, "{flavor:?}");
        spec.secret = SecretChange::Keep;
        spec.title = "kept".into();
        let kept = client
            .update_hook(&s.repo, &hook, &spec)
            .await
            .expect("update");
        assert_eq!(
            secret_of(&kept.secret),
            expected,
            "{flavor:?}: Keep keeps it"
        );
        spec.secret = SecretChange::Remove;
        let removed = client
            .update_hook(&s.repo, &kept, &spec)
            .await
            .expect("update");
        assert_eq!(
            secret_of(&removed.secret),
            "unset",
            "{flavor:?}: Remove removes it"
        );
        assert_eq!(
            s.ctl.hooks().await.expect("hooks")[0]["secret"],
            json!(null)
        );
    }
    let s = setup(Flavor::PostWebhooks).await;
    let mut spec = s.spec("https://ci.example.com/a");
    spec.secret = SecretChange::Set("x".to_owned().into());
    let err = s
        .client(ADMIN)
        .create_hook(&s.repo, &spec)
        .await
        .expect_err("no secrets on Post Webhooks");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
}

#[tokio::test]
async fn listing_follows_every_page() {
    for flavor in [Flavor::Cloud, Flavor::DataCenter] {
        let s = setup(flavor).await;
        let client = s.client(ADMIN);
        for i in 0..250 {
            client
                .create_hook(&s.repo, &s.spec(&format!("https://ci.example.com/{i}")))
                .await
                .expect("create");
        }
        s.ctl.reset_requests().await.expect("reset");
        let hooks = client.list_hooks(&s.repo).await.expect("list");
        assert_eq!(hooks.len(), 250, "{flavor:?}");
        let mut urls: Vec<_> = hooks.iter().map(|h| h.url.clone()).collect();
        urls.dedup();
        assert_eq!(urls.len(), 250, "{flavor:?}: no page twice");
        assert_eq!(
            s.ctl.count("GET", s.list_route()).await.unwrap_or(0),
            3,
            "{flavor:?}: three pages of 100"
        );
    }
}

/// Repository listings as WebhookSet discovery and `export` read them: every page, a
/// Cloud project filter carried across pages, only what the credential may see, and
/// repositories removed on Bitbucket gone from the next listing.
#[tokio::test]
async fn repository_listings_follow_every_page_and_filter() {
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        let name = flavor_name(flavor);
        let owner = &s.repository.owner;
        let many: Vec<String> = (0..130).map(|i| format!("{owner}/svc-{i:03}")).collect();
        let (project, other) = match flavor {
            Flavor::Cloud => (Some("CORE"), Some("EDGE")),
            _ => (None, None),
        };
        s.ctl
            .repositories(name, &many[..120], project, &[ADMIN])
            .await
            .expect("repositories");
        s.ctl
            .repositories(name, &many[120..], other, &[ADMIN])
            .await
            .expect("repositories");
        let client = s.client(ADMIN);
        s.ctl.reset_requests().await.expect("reset");
        let all = client.list_repositories(owner, None).await.expect("list");
        // The setup's own repository, plus the 130.
        assert_eq!(all.len(), 131, "{flavor:?}");
        assert!(all.contains(&RepoRef::parse(&many[129]).expect("repo")));
        let route = match flavor {
            Flavor::Cloud => "/2.0/repositories/{workspace}",
            _ => "/rest/api/latest/projects/{projectKey}/repos",
        };
        assert_eq!(
            s.ctl
                .count_where(|m, r| m == "GET" && r == route)
                .await
                .unwrap_or(0),
            2,
            "{flavor:?}: two pages of 100"
        );
        if flavor == Flavor::Cloud {
            let core = client
                .list_repositories(owner, Some("CORE"))
                .await
                .expect("list");
            assert_eq!(core.len(), 120, "the project filter holds on every page");
        }
        // The reader sees only the repository it reads.
        let seen = s
            .client(READER)
            .list_repositories(owner, None)
            .await
            .expect("list");
        assert_eq!(seen, vec![s.repository.clone()], "{flavor:?}");
        // Removed on Bitbucket, gone from the listing.
        s.ctl
            .remove_repositories(name, &many[..10])
            .await
            .expect("remove");
        let after = client.list_repositories(owner, None).await.expect("list");
        assert_eq!(after.len(), 121, "{flavor:?}");
        let err = client
            .list_repositories("nowhere", None)
            .await
            .expect_err("no such owner");
        assert!(matches!(err, Error::NotFound { .. }), "{flavor:?}: {err:?}");
    }
}

#[tokio::test]
async fn each_error_class_is_recognised() {
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        let bad = s.client("no-such-token");
        let err = bad.list_hooks(&s.repo).await.expect_err("bad token");
        assert!(
            matches!(err, Error::Unauthorized { .. }),
            "{flavor:?}: {err:?}"
        );
        assert!(
            matches!(
                bad.verify_credentials().await,
                Err(Error::Unauthorized { .. })
            ),
            "{flavor:?}"
        );

        let reader = s.client(READER);
        let err = reader
            .create_hook(&s.repo, &s.spec("https://ci.example.com/a"))
            .await
            .expect_err("reader");
        assert!(
            matches!(err, Error::Forbidden { .. }),
            "{flavor:?}: {err:?}"
        );
        assert!(
            err.to_string().contains("must be a repository admin"),
            "{err}"
        );

        let admin = s.client(ADMIN);
        let missing = Place::Repository(
            RepoRef::parse(if flavor == Flavor::Cloud {
                "acme/nope"
            } else {
                "PLAT/nope"
            })
            .expect("repo"),
        );
        let err = admin
            .list_hooks(&missing)
            .await
            .expect_err("unknown repository");
        assert!(matches!(err, Error::NotFound { .. }), "{flavor:?}: {err:?}");
        assert_eq!(err.reason().as_str(), "NotFound");

        let mut wrong = s.spec("https://ci.example.com/a");
        wrong.events = vec![if flavor == Flavor::Cloud {
            "repo:refs_changed".into()
        } else {
            "repo:push".into()
        }];
        let err = admin
            .create_hook(&s.repo, &wrong)
            .await
            .expect_err("wrong event");
        let Error::Invalid { message } = &err else {
            panic!("{flavor:?}: {err:?}")
        };
        assert!(
            message.contains("repo:"),
            "{flavor:?}: Bitbucket's message is kept: {message}"
        );
        assert!(s.ctl.hooks().await.expect("hooks").is_empty());
    }
}

#[tokio::test]
async fn rate_limits_with_and_without_retry_after() {
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        let client = s.client(ADMIN);
        // One 429 with Retry-After: 1s: waited out, then it works.
        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 429, "count": 1, "retryAfter": 1 }))
            .await
            .expect("faults");
        let started = std::time::Instant::now();
        client
            .list_hooks(&s.repo)
            .await
            .expect("retried after Retry-After");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{flavor:?}: Retry-After honoured"
        );
        // One 429 without Retry-After: no quick retry (Cloud's window is a rolling hour);
        // every request of the credential waits out the pause, then it works.
        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 429, "count": 1 }))
            .await
            .expect("faults");
        s.ctl.reset_requests().await.expect("reset");
        let err = client.list_hooks(&s.repo).await.expect_err("paused");
        assert_eq!(
            err,
            Error::RateLimited {
                retry_after: Some(PAUSE),
                local: false
            },
            "{flavor:?}"
        );
        let err = client.list_hooks(&s.repo).await.expect_err("still paused");
        assert!(
            matches!(err, Error::RateLimited { local: true, .. }),
            "{flavor:?}: {err:?}"
        );
        assert_eq!(
            s.ctl.count("GET", s.list_route()).await.unwrap_or(0),
            1,
            "{flavor:?}: nothing sent during the pause"
        );
        tokio::time::sleep(PAUSE).await;
        client.list_hooks(&s.repo).await.expect("after the pause");
        // A Retry-After longer than the client waits: handed to the caller, no retry.
        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 429, "retryAfter": 3600 }))
            .await
            .expect("faults");
        s.ctl.reset_requests().await.expect("reset");
        let err = client.list_hooks(&s.repo).await.expect_err("long wait");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
        assert_eq!(
            s.ctl.count("GET", s.list_route()).await.unwrap_or(0),
            1,
            "{flavor:?}: not retried"
        );
        // Every answer a 429 with "Retry-After: 0" (found by tests/fuzz.rs: the client
        // retried it for ever): tried as often as the policy allows, then handed back.
        let client = s.client(ADMIN);
        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 429, "retryAfter": 0 }))
            .await
            .expect("faults");
        s.ctl.reset_requests().await.expect("reset");
        let err = tokio::time::timeout(Duration::from_secs(10), client.list_hooks(&s.repo))
            .await
            .expect("the call ends")
            .expect_err("still 429");
        assert!(
            matches!(err, Error::RateLimited { .. }),
            "{flavor:?}: {err:?}"
        );
        let sent = s.ctl.count("GET", s.list_route()).await.unwrap_or(0);
        assert!(
            (1..=fast_retries().max_retries as u64 + 1).contains(&sent),
            "{flavor:?}: {sent} requests for one call"
        );
        // The simulator's per-credential hourly limit (a new client: the old one's
        // credential is paused for the hour Bitbucket asked for).
        let client = s.client(ADMIN);
        s.ctl.clear_faults().await.expect("clear");
        client.verify_credentials().await.expect("verify");
        s.ctl
            .faults(json!({ "rateLimitPerHour": 2 }))
            .await
            .expect("faults");
        client.list_hooks(&s.repo).await.expect("1");
        client.list_hooks(&s.repo).await.expect("2");
        assert!(matches!(
            client.list_hooks(&s.repo).await,
            Err(Error::RateLimited { local: false, .. })
        ));
        s.ctl.clear_faults().await.expect("clear");
    }
}

#[tokio::test]
async fn a_burst_of_5xx_recovers_within_the_retry_budget() {
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        let client = s.client(ADMIN);
        // Post Webhooks: the app's API is detected once, before the faults.
        client.verify_credentials().await.expect("verify");
        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 503, "count": 2 }))
            .await
            .expect("faults");
        s.ctl.reset_requests().await.expect("reset");
        client.list_hooks(&s.repo).await.expect("recovers");
        assert_eq!(
            s.ctl.count("GET", s.list_route()).await.unwrap_or(0),
            3,
            "{flavor:?}: two failures, one success"
        );

        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 502 }))
            .await
            .expect("faults");
        s.ctl.reset_requests().await.expect("reset");
        let err = client.list_hooks(&s.repo).await.expect_err("outage");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert_eq!(err.reason().as_str(), "BitbucketUnavailable");
        assert_eq!(
            s.ctl.count("GET", s.list_route()).await.unwrap_or(0),
            4,
            "{flavor:?}: one try and three retries"
        );
        s.ctl.clear_faults().await.expect("clear");
    }
}

#[tokio::test]
async fn a_create_is_not_retried_after_a_5xx() {
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        let client = s.client(ADMIN);
        let route = match flavor {
            Flavor::Cloud => "POST /2.0/repositories/{workspace}/{repo_slug}/hooks",
            Flavor::DataCenter => {
                "POST /rest/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks"
            }
            Flavor::PostWebhooks => "POST /rest/webhook/2.0/configurations",
        };
        s.ctl
            .faults(json!({ "errorRate": 1.0, "status": 500, "count": 1, "routes": [route] }))
            .await
            .expect("faults");
        s.ctl.reset_requests().await.expect("reset");
        let err = client
            .create_hook(&s.repo, &s.spec("https://ci.example.com/a"))
            .await
            .expect_err("5xx");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert_eq!(
            s.ctl.count("POST", "").await.unwrap_or(0),
            1,
            "{flavor:?}: a create is sent once"
        );
        client
            .create_hook(&s.repo, &s.spec("https://ci.example.com/a"))
            .await
            .expect("next create works");
        assert_eq!(
            s.ctl.hooks().await.expect("hooks").len(),
            1,
            "{flavor:?}: no duplicate"
        );
    }
}

#[tokio::test]
async fn the_connection_budget_is_never_exceeded() {
    let s = setup(Flavor::Cloud).await;
    // 5 per hour: a burst of 1, then one every 15 minutes.
    let client = s.client_with(ADMIN, Budget::per_hour(5));
    s.ctl.reset_requests().await.expect("reset");
    client.list_hooks(&s.repo).await.expect("first");
    for _ in 0..3 {
        let err = client.list_hooks(&s.repo).await.expect_err("budget spent");
        let Error::RateLimited {
            local: true,
            retry_after: Some(wait),
        } = err
        else {
            panic!("{err:?}")
        };
        assert!(wait > Duration::from_secs(800), "{wait:?}");
    }
    assert_eq!(
        s.ctl.count("GET", s.list_route()).await.unwrap_or(0),
        1,
        "only the budgeted request reached Bitbucket"
    );
}

#[tokio::test]
async fn data_center_statistics_in_both_shapes_and_test_deliveries() {
    for shape in ["summary", "byEvent"] {
        let s = setup(Flavor::DataCenter).await;
        s.ctl
            .variants(json!({ "dcStatistics": shape }))
            .await
            .expect("variant");
        let client = s.client(ADMIN);
        let receiver = bitbucket_sim::receiver::Receiver::start(false)
            .await
            .expect("receiver");
        let hook = client
            .create_hook(&s.repo, &s.spec(&receiver.url()))
            .await
            .expect("create");
        let stats_now = || async {
            let hooks = client.list_hooks(&s.repo).await.expect("list");
            hooks[0].stats.clone().expect("statistics with the listing")
        };
        let empty = stats_now().await;
        assert_eq!(
            (empty.successes, empty.failures, empty.errors),
            (0, 0, 0),
            "{shape}"
        );

        s.ctl
            .emit("PLAT/api", "repo:refs_changed")
            .await
            .expect("emit");
        receiver.set_status(500);
        s.ctl.emit("PLAT/api", "pr:opened").await.expect("emit");
        s.ctl.reset_requests().await.expect("reset");
        let stats = stats_now().await;
        assert_eq!(
            s.ctl.count("GET", "webhooks").await.expect("count"),
            1,
            "{shape}: one listing, no call per hook"
        );
        assert_eq!(
            (stats.successes, stats.failures, stats.errors),
            (1, 1, 0),
            "{shape}"
        );
        assert_eq!(
            stats.last_success.as_ref().map(|i| i.event.as_str()),
            Some("repo:refs_changed"),
            "{shape}"
        );
        let failure = stats.last_failure.expect("a failure");
        assert_eq!(
            (failure.outcome.as_str(), failure.description.as_str()),
            ("FAILURE", "500"),
            "{shape}"
        );

        let url = receiver.url();
        let result = client
            .test_delivery(&s.repo, &hook.id, &url, false)
            .await
            .expect("test");
        assert_eq!(result.status, Some(500));
        receiver.set_status(204);
        let result = client
            .test_delivery(&s.repo, &hook.id, &url, false)
            .await
            .expect("test");
        assert_eq!(result.status, Some(204), "{}", result.message);
        let pings = receiver
            .received()
            .into_iter()
            .filter(|r| r.header("X-Event-Key") == Some("diagnostics:ping"))
            .count();
        assert_eq!(pings, 2);
    }

    let cloud = setup(Flavor::Cloud).await;
    let client = cloud.client(ADMIN);
    client
        .create_hook(&cloud.repo, &cloud.spec("https://ci.example.com/a"))
        .await
        .expect("create");
    let hooks = client.list_hooks(&cloud.repo).await.expect("list");
    assert!(hooks[0].stats.is_none(), "Cloud reports no statistics");
    assert!(matches!(
        client
            .test_delivery(&cloud.repo, "{x}", "https://ci.example.com/a", false)
            .await,
        Err(Error::Unsupported { .. })
    ));
}

#[tokio::test]
async fn a_data_center_test_delivery_without_url_fails_as_live_servers_do() {
    let s = setup(Flavor::DataCenter).await;
    let hook = s
        .client(ADMIN)
        .create_hook(&s.repo, &s.spec("https://ci.example.com/a"))
        .await
        .expect("create");
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/rest/api/latest/projects/PLAT/repos/api/webhooks/test?webhookId={}",
            s.sim.base_url(),
            hook.id
        ))
        .basic_auth("alice", Some(ADMIN))
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 500);
}

#[tokio::test]
async fn a_data_center_update_sends_the_whole_webhook() {
    let s = setup(Flavor::DataCenter).await;
    // A hook made in Bitbucket's UI: a secret and delivery credentials.
    let made = reqwest::Client::new()
        .post(format!(
            "{}/rest/api/latest/projects/PLAT/repos/api/webhooks",
            s.sim.base_url()
        ))
        .basic_auth("alice", Some(ADMIN))
        .json(&json!({
            "name": "CI trigger", "url": "https://ci.example.com/a", "events": ["repo:refs_changed"],
            "configuration": { "secret": "ui-secret" },
            "credentials": { "username": "deliverer", "password": "pw" },
        }))
        .send()
        .await
        .expect("create");
    assert!(made.status().is_success());
    let client = s.client(ADMIN);
    let current = client.list_hooks(&s.repo).await.expect("list").remove(0);
    let mut spec = s.spec("https://ci.example.com/b");
    spec.events = vec!["repo:refs_changed".into()];
    client
        .update_hook(&s.repo, &current, &spec)
        .await
        .expect("update");
    let hooks = s.ctl.hooks().await.expect("hooks");
    assert_eq!(hooks[0]["url"], json!("https://ci.example.com/b"));
    assert_eq!(
        hooks[0]["secret"],
        json!("ui-secret"),
        "the secret survives"
    );
    let listed = client.list_hooks(&s.repo).await.expect("list").remove(0);
    assert_eq!(
        listed.read.0.get("credentials"),
        Some(&json!({ "username": "deliverer" })),
        "delivery credentials survive"
    );

    // The simulator's PUT replaces: a partial body loses the secret.
    let partial = reqwest::Client::new()
        .put(format!(
            "{}/rest/api/latest/projects/PLAT/repos/api/webhooks/{}",
            s.sim.base_url(),
            listed.id
        ))
        .basic_auth("alice", Some(ADMIN))
        .json(&json!({ "name": "x", "url": "https://ci.example.com/c", "events": ["repo:refs_changed"] }))
        .send()
        .await
        .expect("put");
    assert!(partial.status().is_success());
    assert_eq!(
        s.ctl.hooks().await.expect("hooks")[0]["secret"],
        json!(null)
    );
}

#[tokio::test]
async fn cloud_credentials_of_every_kind() {
    let s = setup(Flavor::Cloud).await;
    s.ctl
        .repository(
            "Cloud",
            "acme/api",
            &[
                "repo-token",
                "project-token",
                "workspace-token",
                "api-token",
                "oauth-token",
                "no-scope",
            ],
            &[],
        )
        .await
        .expect("repository");
    let kinds: [(&str, &str, &[&str], Option<&str>); 5] = [
        // The events (repo:push, pullrequest:created) need `repository` and
        // `pullrequest`; `pullrequest` implies `repository`.
        (
            "repo-token",
            "repositoryAccessToken",
            &["webhook", "pullrequest"],
            None,
        ),
        (
            "project-token",
            "projectAccessToken",
            &["webhook", "repository", "pullrequest"],
            None,
        ),
        (
            "workspace-token",
            "workspaceAccessToken",
            &["webhook", "account", "pullrequest:write"],
            Some("acme-bot"),
        ),
        (
            "api-token",
            "apiToken",
            &[
                "read:webhook:bitbucket",
                "write:webhook:bitbucket",
                "delete:webhook:bitbucket",
            ],
            None,
        ),
        (
            "oauth-token",
            "oauth",
            &["webhook", "account", "pullrequest"],
            Some("acme-bot"),
        ),
    ];
    for status in [403, 401] {
        s.ctl
            .variants(json!({ "cloudScopeStatus": status }))
            .await
            .expect("variant");
        for (token, kind, scopes, user) in kinds {
            s.ctl
                .scoped_token(token, "acme-bot", kind, scopes)
                .await
                .expect("token");
            let client = if kind == "apiToken" {
                s.api_token_client("acme-bot", token, fast_retries())
            } else {
                s.client(token)
            };
            // Without `account` the identity call is refused; on Cloud that is only a
            // hint (the connection then proves the credential on a repository).
            assert!(!client.identity_is_conclusive());
            match (client.verify_credentials().await, user) {
                (Ok(who), Some(_)) => assert_eq!(who.user.as_deref(), user, "{kind} ({status})"),
                (Err(Error::MissingScope { required, .. }), None) => assert!(
                    required == ["account"] || required == ["read:user:bitbucket"],
                    "{kind}: {required:?}"
                ),
                (other, _) => panic!("{kind} ({status}): {other:?}"),
            }
            let hook = client
                .create_hook(&s.repo, &s.spec(&format!("https://ci.example.com/{kind}")))
                .await
                .unwrap_or_else(|e| panic!("{kind} ({status}): {e}"));
            client.list_hooks(&s.repo).await.expect("list");
            client.delete_hook(&s.repo, &hook.id).await.expect("delete");
        }
        // A token without the webhook scope: the refusal names what is missing.
        s.ctl
            .scoped_token(
                "no-scope",
                "acme-bot",
                "repositoryAccessToken",
                &["repository"],
            )
            .await
            .expect("token");
        let err = s
            .client("no-scope")
            .list_hooks(&s.repo)
            .await
            .expect_err("no webhook scope");
        assert_eq!(
            err,
            Error::MissingScope {
                required: vec!["webhook".into()],
                granted: vec!["repository".into()]
            },
            "{status}"
        );
        assert_eq!(err.reason().as_str(), "Forbidden");
    }
    // A plain token (registered without a kind) keeps working as before.
    assert_eq!(
        s.client(ADMIN)
            .verify_credentials()
            .await
            .expect("verify")
            .user
            .as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn cloud_hooks_need_the_scope_of_each_event_family() {
    // Atlassian's text for POST .../hooks: the webhook scope "as well as any scope that
    // applies to the events that the webhook subscribes to".
    let s = setup(Flavor::Cloud).await;
    s.ctl
        .repository("Cloud", "acme/api", &["webhook-only", "api-token"], &[])
        .await
        .expect("repository");
    s.ctl
        .scoped_token(
            "webhook-only",
            "acme-bot",
            "repositoryAccessToken",
            &["webhook", "repository"],
        )
        .await
        .expect("token");
    let client = s.client("webhook-only");
    let err = client
        .create_hook(&s.repo, &s.spec("https://ci.example.com/pr"))
        .await
        .expect_err("pullrequest:created needs pullrequest");
    assert_eq!(
        err,
        Error::MissingScope {
            required: vec!["pullrequest".into()],
            granted: vec!["webhook".into(), "repository".into()]
        }
    );
    assert!(err.reason().is_terminal(), "a missing scope needs a person");
    let mut push_only = s.spec("https://ci.example.com/push");
    push_only.events = vec!["repo:push".into()];
    let hook = client
        .create_hook(&s.repo, &push_only)
        .await
        .expect("repo:push");
    // An update that adds a family is refused the same way.
    let err = client
        .update_hook(&s.repo, &hook, &s.spec("https://ci.example.com/push"))
        .await
        .expect_err("update adds pullrequest:created");
    assert!(matches!(err, Error::MissingScope { .. }), "{err:?}");

    // API tokens: whether a granular scope per family is needed is not documented; with
    // the variant on, the refusal names it and the client reports it as for access tokens.
    s.ctl
        .scoped_token(
            "api-token",
            "acme-bot",
            "apiToken",
            &["read:webhook:bitbucket", "write:webhook:bitbucket"],
        )
        .await
        .expect("token");
    let api = s.api_token_client("acme-bot", "api-token", fast_retries());
    for (enforced, wanted) in [(false, None), (true, Some("read:pullrequest:bitbucket"))] {
        s.ctl
            .variants(json!({ "cloudApiTokenEventScopes": enforced }))
            .await
            .expect("variant");
        let url = format!("https://ci.example.com/api-{enforced}");
        match (api.create_hook(&s.repo, &s.spec(&url)).await, wanted) {
            (Ok(_), None) => {}
            (Err(Error::MissingScope { required, .. }), Some(scope)) => {
                assert!(required.iter().any(|r| r == scope), "{required:?}");
            }
            (other, _) => panic!("enforced {enforced}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn data_center_writes_as_servers_answer_them() {
    let s = setup(Flavor::DataCenter).await;
    let client = s.client(ADMIN);
    let secret = || SecretChange::Set("s3cret".to_owned().into());
    // 9.x servers answer a create with 201 and may echo `"configuration": {}` although
    // the secret is stored: the answer must not be read as "no secret".
    s.ctl
        .variants(json!({ "dcCreateStatus": 201, "dcWriteConfiguration": "empty" }))
        .await
        .expect("variant");
    let mut spec = s.spec("https://ci.example.com/echo");
    spec.secret = secret();
    let created = client
        .create_hook(&s.repo, &spec)
        .await
        .expect("201 is a create");
    assert!(
        matches!(created.secret, SecretState::Known(_)),
        "{:?}",
        created.secret
    );
    // An update from that answer (a title change, the secret kept) keeps the secret.
    let mut retitled = s.spec("https://ci.example.com/echo");
    retitled.title = "renamed".into();
    let updated = client
        .update_hook(&s.repo, &created, &retitled)
        .await
        .expect("update");
    assert!(matches!(updated.secret, SecretState::Known(_)));
    let stored = s.ctl.hooks().await.expect("hooks");
    assert_eq!(
        stored[0]["secret"],
        json!("s3cret"),
        "the update kept the secret"
    );
    assert_eq!(stored[0]["title"], json!("renamed"));

    // Removing the secret of a hook whose configuration holds other keys removes it
    // (read back), and keeps the others.
    s.ctl.variants(json!({})).await.expect("defaults");
    let raw = reqwest::Client::new()
        .post(format!(
            "{}/rest/api/latest/projects/PLAT/repos/api/webhooks",
            s.sim.base_url()
        ))
        .basic_auth("alice", Some(ADMIN))
        .json(&json!({
            "name": "made elsewhere", "url": "https://ci.example.com/other",
            "events": ["repo:refs_changed"], "active": true,
            "configuration": { "secret": "old", "createdBy": "jenkins" },
        }))
        .send()
        .await
        .expect("raw create");
    assert!(raw.status().is_success(), "{}", raw.status());
    let listed = client.list_hooks(&s.repo).await.expect("list");
    let other = listed
        .iter()
        .find(|h| h.url == "https://ci.example.com/other")
        .expect("listed");
    let mut unsigned = s.spec("https://ci.example.com/other");
    unsigned.events = vec!["repo:refs_changed".into()];
    unsigned.secret = SecretChange::Remove;
    client
        .update_hook(&s.repo, other, &unsigned)
        .await
        .expect("remove the secret");
    let again = client.list_hooks(&s.repo).await.expect("list");
    let other = again
        .iter()
        .find(|h| h.url == "https://ci.example.com/other")
        .expect("listed");
    assert!(
        matches!(other.secret, SecretState::Unset),
        "{:?}",
        other.secret
    );
    let stored = s.ctl.hooks().await.expect("hooks");
    let raw = stored
        .iter()
        .find(|h| h["url"] == json!("https://ci.example.com/other"))
        .expect("stored");
    assert_eq!(raw["secret"], Value::Null);
    assert_eq!(raw["configuration"], json!({ "createdBy": "jenkins" }));
}

#[tokio::test]
async fn null_fields_do_not_fail_a_listing() {
    for flavor in [Flavor::Cloud, Flavor::DataCenter] {
        let s = setup(flavor).await;
        let body = match flavor {
            Flavor::Cloud => json!({ "values": [
                { "uuid": "{0b5b7e0e-0000-4000-8000-000000000001}", "url": "https://ci.example.com/a",
                  "description": null, "events": null, "active": null, "secret_set": null,
                  "skip_cert_verification": null },
                { "uuid": "{0b5b7e0e-0000-4000-8000-000000000002}", "url": null, "events": ["repo:push"] },
            ]}),
            _ => json!({ "isLastPage": true, "values": [
                { "id": 1, "url": "https://ci.example.com/a", "name": null, "events": null,
                  "configuration": null, "active": null, "sslVerificationRequired": null,
                  "statistics": null },
                { "id": 2, "url": null, "name": "no url", "events": ["repo:refs_changed"] },
            ]}),
        };
        let route = match flavor {
            Flavor::Cloud => "GET /2.0/repositories/{workspace}/{repo_slug}/hooks",
            _ => "GET /rest/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks",
        };
        s.ctl
            .faults(json!({
                "errorRate": 1.0, "after": "body", "body": body.to_string(), "routes": [route],
            }))
            .await
            .expect("fault");
        let hooks = s
            .client(ADMIN)
            .list_hooks(&s.repo)
            .await
            .unwrap_or_else(|e| panic!("{flavor:?}: {e}"));
        assert_eq!(hooks.len(), 2, "{flavor:?}");
        assert_eq!(hooks[0].title, "");
        assert!(hooks[0].events.is_empty());
        assert!(matches!(hooks[0].secret, SecretState::Unset));
        assert!(
            !hooks[0].skip_cert_verification,
            "{flavor:?}: null is the default"
        );
        assert_eq!(hooks[1].url, "", "a null url matches no Webhook");
    }
}

#[tokio::test]
async fn post_webhooks_on_the_v1_api_and_v2_updates_keep_the_app_settings() {
    // v1 (app older than 3.5.5): detected, and the same spec works through triggers.
    let s = setup(Flavor::PostWebhooks).await;
    s.ctl
        .variants(json!({ "postWebhooksApi": "v1" }))
        .await
        .expect("variant");
    let client = s.client(ADMIN);
    let who = client.verify_credentials().await.expect("verify");
    assert!(
        who.detail
            .as_deref()
            .is_some_and(|d| d.contains("older than 3.5.5")),
        "{who:?}"
    );
    let hook = client
        .create_hook(&s.repo, &s.spec("https://ci.example.com/a"))
        .await
        .expect("create");
    let listed = client.list_hooks(&s.repo).await.expect("list");
    assert_eq!(listed.len(), 1);
    let mut want = s.events();
    want.sort();
    let mut got = listed[0].events.clone();
    got.sort();
    assert_eq!(got, want);
    let mut spec = s.spec("https://ci.example.com/b");
    spec.events = vec!["TAG_CREATED".into()];
    let updated = client
        .update_hook(&s.repo, &listed[0], &spec)
        .await
        .expect("update");
    assert_eq!(updated.events, ["TAG_CREATED"]);
    assert_eq!(updated.id, hook.id);
    let mut bad = s.spec("https://ci.example.com/c");
    bad.events = vec!["PULL_REQUEST_COMMENT_ACTIVITY".into()];
    assert!(matches!(
        client.create_hook(&s.repo, &bad).await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(
        client.delete_hook(&s.repo, &hook.id).await.expect("delete"),
        Deleted::Removed
    );
    assert!(
        s.ctl
            .count("GET", "/rest/webhook/1.0")
            .await
            .expect("count")
            > 0,
        "the v1 API was used"
    );

    // v2: a configuration with settings made in the app's UI keeps them on update.
    let s = setup(Flavor::PostWebhooks).await;
    let made = reqwest::Client::new()
        .post(format!(
            "{}/rest/webhook/2.0/configurations",
            s.sim.base_url()
        ))
        .bearer_auth(ADMIN)
        .json(&json!({
            "name": "CI trigger", "enabled": true, "projectKey": "PLAT", "repositorySlug": "api",
            "destinations": [{ "useUrl": true, "url": "https://ci.example.com/a" }],
            "eventTypes": ["ABSTRACT_REPOSITORY_REFS_CHANGED"],
            "branchesToIgnore": "wip/*", "users": ["alice"],
        }))
        .send()
        .await
        .expect("create");
    assert!(made.status().is_success());
    let client = s.client(ADMIN);
    let current = client.list_hooks(&s.repo).await.expect("list").remove(0);
    client
        .update_hook(&s.repo, &current, &s.spec("https://ci.example.com/b"))
        .await
        .expect("update");
    let after = client.list_hooks(&s.repo).await.expect("list").remove(0);
    assert_eq!(after.url, "https://ci.example.com/b");
    assert_eq!(after.read.0.get("branchesToIgnore"), Some(&json!("wip/*")));
    assert_eq!(after.read.0.get("users"), Some(&json!(["alice"])));
}

#[tokio::test]
async fn tls_with_a_private_ca_or_explicitly_insecure() {
    // A private CA signs the simulator's certificate.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let sim = bitbucket_sim::start_tls(&cert.pem(), &key.serialize_pem())
        .await
        .expect("https simulator");
    {
        let mut state = sim.sim.lock();
        state.tokens.insert(
            ADMIN.into(),
            bitbucket_sim::state::Token {
                user: "alice".into(),
                kind: None,
                scopes: Vec::new(),
            },
        );
    }
    let client = |tls: TlsOptions| {
        connect(ConnectionConfig {
            flavor: Flavor::DataCenter,
            base_url: Some(sim.base_url()),
            credentials: Credentials::Bearer(ADMIN.to_owned().into()),
            tls,
            budget: Arc::new(Budget::per_hour(1000)),
            retry: RetryPolicy {
                max_retries: 0,
                ..fast_retries()
            },
            observer: None,
        })
        .expect("client")
    };
    let err = client(TlsOptions::default())
        .verify_credentials()
        .await
        .expect_err("unknown CA");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let trusted = TlsOptions {
        ca_bundle_pem: Some(ca_cert.pem().into_bytes()),
        insecure_skip_verify: false,
    };
    assert_eq!(
        client(trusted)
            .verify_credentials()
            .await
            .expect("trusted CA")
            .user
            .as_deref(),
        Some("alice")
    );
    let insecure = TlsOptions {
        ca_bundle_pem: None,
        insecure_skip_verify: true,
    };
    assert_eq!(
        client(insecure)
            .verify_credentials()
            .await
            .expect("insecure")
            .user
            .as_deref(),
        Some("alice")
    );
    let bad = TlsOptions {
        ca_bundle_pem: Some(b"not pem".to_vec()),
        insecure_skip_verify: false,
    };
    let err = connect(ConnectionConfig {
        flavor: Flavor::DataCenter,
        base_url: Some(sim.base_url()),
        credentials: Credentials::Bearer(ADMIN.to_owned().into()),
        tls: bad,
        budget: Arc::new(Budget::per_hour(1000)),
        retry: fast_retries(),
        observer: None,
    })
    .expect_err("bad CA bundle");
    assert!(err.to_string().contains("CA bundle"), "{err}");
}

/// The place above the setup's repository at which its flavor has hooks.
fn owner_place(flavor: Flavor) -> Place {
    match flavor {
        Flavor::Cloud => Place::Workspace("acme".into()),
        _ => Place::Project("PLAT".into()),
    }
}

#[tokio::test]
async fn project_and_workspace_hooks_round_trip_and_fire_for_the_repositories_below() {
    const OWNER: &str = "owner-token";
    for flavor in FLAVORS {
        let s = setup(flavor).await;
        // A second token of alice (Data Center checks the Basic user name), an owner admin.
        s.ctl.token(OWNER, "alice").await.expect("token");
        let repository = s.repository.to_string();
        s.ctl
            .owner_admins(flavor_name(flavor), &repository, &[OWNER])
            .await
            .expect("owner admin");
        let place = owner_place(flavor);
        let owner = s.client(OWNER);
        let receiver = bitbucket_sim::receiver::Receiver::start(false)
            .await
            .expect("receiver");
        let created = owner
            .create_hook(&place, &s.spec(&receiver.url()))
            .await
            .unwrap_or_else(|e| panic!("{flavor:?}: create at {place}: {e}"));
        let listed = owner.list_hooks(&place).await.expect("list");
        assert_eq!(listed.len(), 1, "{flavor:?}");
        assert_eq!(listed[0].id, created.id, "{flavor:?}");
        assert!(
            owner.list_hooks(&s.repo).await.expect("list").is_empty(),
            "{flavor:?}: the repository's own hooks do not include its owner's"
        );
        // An event of a repository below fires the hook above it.
        let event = s.events()[0].clone();
        let event = match flavor {
            Flavor::PostWebhooks => "repo:refs_changed".to_owned(),
            _ => event,
        };
        s.ctl.emit(&repository, &event).await.expect("emit");
        assert_eq!(receiver.received().len(), 1, "{flavor:?}: one delivery");

        let mut changed = s.spec(&receiver.url());
        changed.title = "renamed".into();
        let updated = owner
            .update_hook(&place, &listed[0], &changed)
            .await
            .expect("update");
        assert_eq!(updated.title, "renamed", "{flavor:?}");
        assert!(
            owner.webhooks_page(&place).contains(place.owner()),
            "{flavor:?}"
        );
        // A repository admin is not an owner admin.
        let err = s
            .client(ADMIN)
            .create_hook(&place, &s.spec("https://ci.example.com/b"))
            .await
            .expect_err("a repository admin at the owner's level");
        assert!(
            matches!(err, Error::Forbidden { .. } | Error::Unauthorized { .. }),
            "{flavor:?}: {err:?}"
        );
        assert_eq!(
            owner
                .delete_hook(&place, &created.id)
                .await
                .expect("delete"),
            Deleted::Removed
        );
        assert!(owner.list_hooks(&place).await.expect("list").is_empty());

        // The level the flavor does not have is refused before any request.
        let other = match flavor {
            Flavor::Cloud => Place::Project("PLAT".into()),
            _ => Place::Workspace("acme".into()),
        };
        s.ctl.reset_requests().await.expect("reset");
        let err = owner
            .create_hook(&other, &s.spec("https://ci.example.com/c"))
            .await
            .expect_err("no such level");
        assert!(
            matches!(err, Error::Invalid { .. }) && err.to_string().contains("no webhooks on a"),
            "{flavor:?}: {err}"
        );
        assert_eq!(
            s.ctl.count_where(|_, _| true).await.expect("count"),
            0,
            "{flavor:?}: nothing sent"
        );
    }
}

#[tokio::test]
async fn post_webhooks_v1_has_no_project_configurations() {
    let s = setup(Flavor::PostWebhooks).await;
    s.ctl
        .variants(json!({ "postWebhooksApi": "v1" }))
        .await
        .expect("variant");
    let err = s
        .client(ADMIN)
        .create_hook(
            &owner_place(Flavor::PostWebhooks),
            &s.spec("https://ci.example.com/a"),
        )
        .await
        .expect_err("v1 has repository configurations only");
    assert!(err.to_string().contains("older than 3.5.5"), "{err}");
}

/// A Post Webhooks setup serving `variants`, and the client of a project admin.
async fn post_webhooks_owner(variants: Value) -> (Setup, Arc<dyn WebhookBackend>) {
    const OWNER: &str = "owner-token";
    let s = setup(Flavor::PostWebhooks).await;
    s.ctl.token(OWNER, "alice").await.expect("token");
    s.ctl
        .owner_admins("PostWebhooks", &s.repository.to_string(), &[OWNER])
        .await
        .expect("owner admin");
    s.ctl.variants(variants).await.expect("variant");
    let client = s.client(OWNER);
    (s, client)
}

#[tokio::test]
async fn post_webhooks_project_listings_answer_the_project_s_own_in_both_variants() {
    for variant in ["own", "withRepositories"] {
        let (s, client) =
            post_webhooks_owner(json!({ "postWebhooksProjectListing": variant })).await;
        let project = owner_place(Flavor::PostWebhooks);
        client
            .create_hook(&s.repo, &s.spec("https://ci.example.com/repository"))
            .await
            .expect("repository configuration");
        let own = client
            .create_hook(&project, &s.spec("https://ci.example.com/project"))
            .await
            .expect("project configuration");
        let listed = client.list_hooks(&project).await.expect("list");
        assert_eq!(
            listed.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            [own.id.as_str()],
            "{variant}: the project's own configuration only"
        );
    }
}

#[tokio::test]
async fn post_webhooks_repository_listings_leave_out_the_project_s_configurations() {
    for variant in ["own", "withProject"] {
        let (s, client) =
            post_webhooks_owner(json!({ "postWebhooksRepositoryListing": variant })).await;
        // The same URL at both levels: the repository's listing must not offer the
        // project's configuration for adoption.
        let url = "https://ci.example.com/same";
        client
            .create_hook(&owner_place(Flavor::PostWebhooks), &s.spec(url))
            .await
            .expect("project configuration");
        let mine = client
            .create_hook(&s.repo, &s.spec(url))
            .await
            .expect("repository configuration");
        let listed = client.list_hooks(&s.repo).await.expect("list");
        assert_eq!(
            listed.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            [mine.id.as_str()],
            "{variant}: the repository's own configuration only"
        );
    }
}

#[tokio::test]
async fn post_webhooks_event_types_in_every_shape_find_the_v2_api() {
    for variant in ["names", "objects", "object", "refused"] {
        let s = setup(Flavor::PostWebhooks).await;
        s.ctl
            .variants(json!({ "postWebhooksEventTypes": variant }))
            .await
            .expect("variant");
        let client = s.client(ADMIN);
        let who = client
            .verify_credentials()
            .await
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert!(
            who.detail.as_deref().is_some_and(|d| d.contains("v2")),
            "{variant}: {who:?}"
        );
        let catalogue = client.event_catalogue().await.expect("catalogue");
        assert!(
            catalogue
                .iter()
                .any(|e| e == "ABSTRACT_REPOSITORY_REFS_CHANGED"),
            "{variant}: {catalogue:?}"
        );
        client
            .create_hook(&s.repo, &s.spec("https://ci.example.com/hook"))
            .await
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
}

#[tokio::test]
async fn cloud_counts_user_credentials_per_user_and_access_tokens_each_on_its_own() {
    let s = setup(Flavor::Cloud).await;
    s.ctl
        .repository(
            "Cloud",
            "acme/api",
            &["api-1", "api-2", "rat-1", "rat-2"],
            &[],
        )
        .await
        .expect("repository");
    let granular = ["read:webhook:bitbucket", "write:webhook:bitbucket"];
    for token in ["api-1", "api-2"] {
        s.ctl
            .scoped_token(token, "dev@example.com", "apiToken", &granular)
            .await
            .expect("token");
    }
    for token in ["rat-1", "rat-2"] {
        s.ctl
            .scoped_token(
                token,
                "acme-api-token",
                "repositoryAccessToken",
                &["webhook"],
            )
            .await
            .expect("token");
    }
    s.ctl
        .faults(json!({ "rateLimitPerHour": 3 }))
        .await
        .expect("limit");
    let basic = |token: &str| {
        let no_retries = RetryPolicy {
            max_retries: 0,
            ..fast_retries()
        };
        s.api_token_client("dev@example.com", token, no_retries)
    };
    // Two API tokens of one user: one allowance of 3.
    let (one, two) = (basic("api-1"), basic("api-2"));
    one.list_hooks(&s.repo).await.expect("1");
    two.list_hooks(&s.repo).await.expect("2");
    one.list_hooks(&s.repo).await.expect("3");
    let err = two.list_hooks(&s.repo).await.expect_err("the user's 4th");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    // Two access tokens: each has its own, and learns it from Cloud's headers.
    let budget = Arc::new(Budget::per_hour(1000));
    let rat = s.connect_as(
        Credentials::Bearer("rat-1".to_owned().into()),
        budget.clone(),
        fast_retries(),
    );
    rat.list_hooks(&s.repo).await.expect("rat-1");
    assert_eq!(budget.limit(), 3, "learned from X-RateLimit-Limit");
    let reported = budget.reported();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].resource, "api");
    assert!(!reported[0].near_limit, "2 of 3 left");
    let raw = |token: &'static str| {
        let url = format!("{}/2.0/repositories/acme/api/hooks", s.sim.base_url());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answer")
        }
    };
    let last = raw("rat-1").await;
    assert_eq!(
        last.headers()["X-RateLimit-NearLimit"],
        "false",
        "1 of 3 left"
    );
    let last = raw("rat-1").await;
    assert_eq!(last.status(), 200);
    assert_eq!(last.headers()["X-RateLimit-NearLimit"], "true", "none left");
    assert_eq!(raw("rat-1").await.status(), 429, "rat-1's 4th");
    assert_eq!(raw("rat-2").await.status(), 200, "rat-2 has its own");
}
