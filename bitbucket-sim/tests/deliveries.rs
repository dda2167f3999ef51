//! Real deliveries: signed payloads in each backend's format reach a receiver; an https
//! receiver with a self-signed certificate is refused unless the hook skips verification;
//! Data Center's statistics count the outcomes.

use bitbucket_events::Backend;
use bitbucket_events::payload::Delivery;
use bitbucket_events::signature;
use bitbucket_sim::receiver::Receiver;
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth("admin");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn sim(flavor: &str, repository: &str) -> (bitbucket_sim::Running, Api) {
    let sim = bitbucket_sim::start().await.expect("sim");
    let ctl = sim.control();
    ctl.token("admin", "alice").await.expect("token");
    ctl.repository(flavor, repository, &["admin"], &[])
        .await
        .expect("repo");
    let api = Api {
        base: sim.base_url(),
        http: reqwest::Client::new(),
    };
    (sim, api)
}

#[tokio::test]
async fn data_center_refuses_a_self_signed_receiver_unless_verification_is_skipped() {
    let (sim, api) = sim("DataCenter", "PLAT/api").await;
    let receiver = Receiver::start(true).await.expect("https receiver");
    let hooks = "/rest/api/latest/projects/PLAT/repos/api/webhooks";
    let (status, hook) = api
        .call(
            reqwest::Method::POST,
            hooks,
            Some(
                json!({ "name": "ci", "url": receiver.url(), "events": ["repo:refs_changed"],
                          "configuration": { "secret": "s3cret" } }),
            ),
        )
        .await;
    assert_eq!(status, 200, "Data Center answers a create with 200: {hook}");
    assert_eq!(hook["sslVerificationRequired"], json!(true));
    let id = hook["id"].as_u64().expect("id");

    let out = sim
        .control()
        .emit("PLAT/api", "repo:refs_changed")
        .await
        .expect("emit");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["outcome"], "ERROR", "certificate refused: {out:?}");
    assert!(
        out[0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("certificate"),
        "{out:?}"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );

    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("{hooks}/{id}"),
            // PUT replaces: the whole webhook goes back, secret included.
            Some({
                let mut whole = hook.clone();
                whole["sslVerificationRequired"] = json!(false);
                whole
            }),
        )
        .await;
    assert_eq!(status, 200);
    let out = sim
        .control()
        .emit("PLAT/api", "repo:refs_changed")
        .await
        .expect("emit");
    assert_eq!(out[0]["outcome"], "SUCCESS", "{out:?}");

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let delivery = &received[0];
    assert_eq!(delivery.header("X-Event-Key"), Some("repo:refs_changed"));
    assert!(delivery.header("X-Request-Id").is_some());
    signature::verify(
        b"s3cret",
        &delivery.body,
        delivery.header("X-Hub-Signature"),
    )
    .expect("signed with the hook's secret");
    let parsed = Delivery::parse(Backend::DataCenter, "repo:refs_changed", &delivery.body)
        .expect("typed payload");
    let Delivery::DcRefsChanged(payload) = parsed else {
        panic!("refs_changed payload")
    };
    assert_eq!(
        (
            payload.repository.project.key.as_str(),
            payload.repository.slug.as_str()
        ),
        ("PLAT", "api")
    );

    let (status, summary) = api
        .call(
            reqwest::Method::GET,
            &format!("{hooks}/{id}/statistics/summary"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(summary["counts"]["successes"], 1, "{summary}");
    assert_eq!(summary["counts"]["errors"], 1, "{summary}");
    assert_eq!(summary["counts"]["failures"], 0, "{summary}");
    assert_eq!(summary["lastError"]["result"]["outcome"], "ERROR");
    let (status, latest) = api
        .call(reqwest::Method::GET, &format!("{hooks}/{id}/latest"), None)
        .await;
    assert_eq!(
        (status, latest["result"]["outcome"].as_str()),
        (200, Some("SUCCESS"))
    );
}

#[tokio::test]
async fn cloud_delivers_with_its_headers_and_retries_5xx_twice() {
    let (sim, api) = sim("Cloud", "acme/api").await;
    let receiver = Receiver::start(true).await.expect("https receiver");
    let (status, hook) = api
        .call(
            reqwest::Method::POST,
            "/2.0/repositories/acme/api/hooks",
            Some(
                json!({ "description": "ci", "url": receiver.url(), "events": ["repo:push"],
                          "secret": "cloud-secret", "skip_cert_verification": true }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["secret_set"], json!(true));
    assert!(hook.get("secret").is_none(), "the secret is write-only");
    let uuid = hook["uuid"].as_str().expect("uuid").to_owned();

    let out = sim
        .control()
        .emit("acme/api", "repo:push")
        .await
        .expect("emit");
    assert_eq!(out[0]["outcome"], "SUCCESS", "{out:?}");
    let delivery = &receiver.received()[0];
    assert_eq!(delivery.header("X-Event-Key"), Some("repo:push"));
    assert_eq!(
        delivery.header("X-Hook-UUID"),
        Some(uuid.trim_matches(|c| c == '{' || c == '}'))
    );
    assert_eq!(
        delivery.header("User-Agent"),
        Some("Bitbucket-Webhooks/2.0")
    );
    assert_eq!(delivery.header("X-Attempt-Number"), Some("1"));
    assert!(
        delivery.header("X-Request-UUID").is_some() && delivery.header("X-Event-Time").is_some()
    );
    signature::verify(
        b"cloud-secret",
        &delivery.body,
        delivery.header("X-Hub-Signature"),
    )
    .expect("signed");
    assert!(matches!(
        Delivery::parse(Backend::Cloud, "repo:push", &delivery.body),
        Ok(Delivery::CloudPush(_))
    ));

    receiver.set_status(503);
    let out = sim
        .control()
        .emit("acme/api", "repo:push")
        .await
        .expect("emit");
    assert_eq!(
        (out[0]["outcome"].as_str(), out[0]["attempts"].as_u64()),
        (Some("FAILURE"), Some(3))
    );
    let attempts: Vec<_> = receiver.received()[1..]
        .iter()
        .map(|r| r.header("X-Attempt-Number").map(str::to_owned))
        .collect();
    assert_eq!(
        attempts,
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );

    // An event the hook is not subscribed to, and an inactive hook, deliver nothing.
    let out = sim
        .control()
        .emit("acme/api", "pullrequest:created")
        .await
        .expect("emit");
    assert!(out.is_empty());
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("/2.0/repositories/acme/api/hooks/{uuid}"),
            Some(json!({ "active": false })),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        sim.control()
            .emit("acme/api", "repo:push")
            .await
            .expect("emit")
            .is_empty()
    );
}

#[tokio::test]
async fn post_webhooks_sends_its_own_event_keys_and_payloads() {
    let (sim, api) = sim("PostWebhooks", "PLAT/web").await;
    let receiver = Receiver::start(false).await.expect("receiver");
    let (status, config) = api
        .call(
            reqwest::Method::POST,
            "/rest/webhook/2.0/configurations",
            Some(json!({ "name": "jenkins", "projectKey": "PLAT", "repositorySlug": "web",
                          "destinations": [{ "useUrl": true, "url": receiver.url() }],
                          "eventTypes": ["ABSTRACT_REPOSITORY_REFS_CHANGED", "PULL_REQUEST_OPENED"] })),
        )
        .await;
    assert_eq!(status, 200, "{config}");
    // Both vocabularies trigger it: the app fires on the server's own events.
    sim.control()
        .emit("PLAT/web", "repo:refs_changed")
        .await
        .expect("emit");
    sim.control()
        .emit("PLAT/web", "PULL_REQUEST_OPENED")
        .await
        .expect("emit");
    let received = receiver.received();
    let keys: Vec<_> = received
        .iter()
        .map(|r| r.header("X-Event-Key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys, ["repo:push", "pullrequest:created"]);
    assert!(
        received
            .iter()
            .all(|r| r.header("X-Hub-Signature").is_none()),
        "Post Webhooks does not sign"
    );
    assert!(matches!(
        Delivery::parse(Backend::PostWebhooks, "repo:push", &received[0].body),
        Ok(Delivery::PwPush(_))
    ));
    assert!(matches!(
        Delivery::parse(
            Backend::PostWebhooks,
            "pullrequest:created",
            &received[1].body
        ),
        Ok(Delivery::PwPullRequest(_))
    ));
}

#[tokio::test]
async fn an_empty_data_center_secret_fails_like_a_live_server() {
    let (_sim, api) = sim("DataCenter", "PLAT/api").await;
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/rest/api/latest/projects/PLAT/repos/api/webhooks",
            Some(json!({ "name": "x", "url": "https://x.example.com", "events": ["repo:refs_changed"],
                          "configuration": { "secret": "" } })),
        )
        .await;
    assert_eq!(status, 500, "{body}");
}
