//! Conformance: every webhook operation of the three APIs, answered as Atlassian's
//! OpenAPI documents (testdata/specs, trimmed) say: documented status codes only, bodies that
//! match the response schemas. Post Webhooks has no published document; its schema here
//! is written from the fields in docs/bitbucket-api.md.
//!
//! By default the target is an in-process `bitbucket-sim`. Point it at a real Bitbucket
//! with environment variables (per backend; a backend without them uses the simulator):
//! `BBWO_CONFORMANCE_{CLOUD,DC,PW}_URL` (Cloud: `https://api.bitbucket.org/2.0`, Data
//! Center / Post Webhooks: the server root), `..._ADMIN` and `..._READER` (Bearer tokens of
//! a repository admin and of a user without admin rights), `..._REPOSITORY`
//! (`workspace/slug` or `PROJECT/slug`), and for the event checks `..._RECEIVER` (a URL
//! that answers 2xx). Every hook the test creates, it deletes.

#[path = "conformance/openapi.rs"]
mod openapi;

use std::collections::BTreeSet;

use openapi::Spec;
use serde_json::{Value, json};

struct Target {
    /// The API root the spec's paths hang off.
    api: String,
    admin: String,
    reader: String,
    owner: String,
    slug: String,
    receiver: String,
    _sim: Option<(bitbucket_sim::Running, bitbucket_sim::receiver::Receiver)>,
}

async fn target(prefix: &str, flavor: &str, repository: &str, api_suffix: &str) -> Target {
    let env = |k: &str| std::env::var(format!("BBWO_CONFORMANCE_{prefix}_{k}")).ok();
    if let (Some(url), Some(admin), Some(reader), Some(repo), Some(receiver)) = (
        env("URL"),
        env("ADMIN"),
        env("READER"),
        env("REPOSITORY"),
        env("RECEIVER"),
    ) {
        let (owner, slug) = repo.split_once('/').expect("REPOSITORY is owner/slug");
        let api = if prefix == "CLOUD" {
            url
        } else {
            format!("{}{api_suffix}", url.trim_end_matches('/'))
        };
        return Target {
            api,
            admin,
            reader,
            owner: owner.into(),
            slug: slug.into(),
            receiver,
            _sim: None,
        };
    }
    let sim = bitbucket_sim::start().await.expect("simulator");
    let ctl = sim.control();
    ctl.token("admin-token", "alice").await.expect("token");
    ctl.token("reader-token", "bob").await.expect("token");
    let body = json!({ "flavor": flavor, "repository": repository, "admins": ["admin-token"],
                       "readers": ["reader-token"], "ownerAdmins": ["admin-token"] });
    reqwest::Client::new()
        .post(format!("{}/_sim/repositories", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("seed repository");
    let receiver = bitbucket_sim::receiver::Receiver::start(false)
        .await
        .expect("receiver");
    let (owner, slug) = repository.split_once('/').expect("owner/slug");
    Target {
        api: format!("{}{api_suffix}", sim.base_url()),
        admin: "admin-token".into(),
        reader: "reader-token".into(),
        owner: owner.into(),
        slug: slug.into(),
        receiver: receiver.url(),
        _sim: Some((sim, receiver)),
    }
}

/// Runs calls and collects what did not conform.
struct Checker<'a> {
    spec: &'a Spec,
    target: &'a Target,
    http: reqwest::Client,
    failures: Vec<String>,
    covered: BTreeSet<(String, String)>,
}

impl<'a> Checker<'a> {
    fn new(spec: &'a Spec, target: &'a Target) -> Checker<'a> {
        Checker {
            spec,
            target,
            http: reqwest::Client::new(),
            failures: Vec::new(),
            covered: BTreeSet::new(),
        }
    }

    /// Calls `method template` (with `{name}` placeholders filled from `params`), expects
    /// `expect`, and checks the answer against the spec.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        params: &[(&str, &str)],
        token: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        self.call_as(method, template, params, token, body, expect, expect)
            .await
    }

    /// As `call`, for an answer live servers were seen to give with a status the spec
    /// does not document: its body is checked as the `documented` status's.
    #[allow(clippy::too_many_arguments)]
    async fn call_as(
        &mut self,
        method: &str,
        template: &str,
        params: &[(&str, &str)],
        token: &str,
        body: Option<Value>,
        expect: u16,
        documented: u16,
    ) -> Value {
        let mut path = template.to_owned();
        for (name, value) in params {
            let encoded: String = value
                .chars()
                .map(|c| match c {
                    '{' => "%7B".to_owned(),
                    '}' => "%7D".to_owned(),
                    c => c.to_string(),
                })
                .collect();
            path = path.replace(&format!("{{{name}}}"), &encoded);
        }
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method_value, format!("{}{path}", self.target.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                self.failures.push(format!("{method} {path}: {e}"));
                return Value::Null;
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let template_only = template.split('?').next().unwrap_or(template);
        if status != expect {
            self.failures.push(format!(
                "{method} {path}: expected {expect}, got {status}: {body}"
            ));
        }
        let checked_as = if status == expect { documented } else { status };
        if let Err(e) = self.spec.check(
            method,
            template_only,
            checked_as,
            content_type.as_deref(),
            &body,
        ) {
            self.failures.push(e);
        }
        if (200..300).contains(&status) {
            self.covered
                .insert((method.to_owned(), template_only.to_owned()));
        }
        body
    }

    /// Every documented operation whose path contains `marker` must have been answered
    /// successfully at least once.
    fn assert_complete(&self, marker: &str, documented: Vec<(String, String)>) {
        let missing: Vec<_> = documented
            .into_iter()
            .filter(|(_, p)| p.contains(marker))
            .filter(|op| !self.covered.contains(op))
            .collect();
        assert!(
            self.failures.is_empty(),
            "not conforming:\n{}",
            self.failures.join("\n")
        );
        assert!(
            missing.is_empty(),
            "webhook operations never exercised: {missing:?}"
        );
    }
}

fn documented(spec_doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in spec_doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_some() {
                ops.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    ops
}

fn spec_doc(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/specs")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).expect("spec")).expect("json")
}

#[tokio::test]
async fn cloud_webhook_operations_conform_to_the_cloud_spec() {
    let file = "bitbucket-cloud-2.0.webhooks.json";
    let spec = Spec::load(file, "");
    let t = target("CLOUD", "Cloud", "acme/api", "/2.0").await;
    let mut c = Checker::new(&spec, &t);
    let (admin, reader) = (t.admin.clone(), t.reader.clone());
    let repo = [
        ("workspace", t.owner.as_str()),
        ("repo_slug", t.slug.as_str()),
    ];
    let hooks = "/repositories/{workspace}/{repo_slug}/hooks";
    let hook = "/repositories/{workspace}/{repo_slug}/hooks/{uid}";

    // The connection check.
    c.call("GET", "/user", &[], &admin, None, 200).await;
    c.call("GET", "/hook_events", &[], &admin, None, 200).await;
    c.call(
        "GET",
        "/hook_events/{subject_type}",
        &[("subject_type", "repository")],
        &admin,
        None,
        200,
    )
    .await;
    c.call(
        "GET",
        "/hook_events/{subject_type}",
        &[("subject_type", "nonsense")],
        &admin,
        None,
        404,
    )
    .await;

    c.call("GET", hooks, &repo, &admin, None, 200).await;
    let body = json!({ "description": "conformance", "url": t.receiver, "active": true,
                       "events": ["repo:push"], "secret": "conformance-secret" });
    let created = c
        .call("POST", hooks, &repo, &admin, Some(body.clone()), 201)
        .await;
    assert!(
        created.get("secret").is_none(),
        "the secret is never returned"
    );
    let uid = created["uuid"].as_str().unwrap_or_default().to_owned();
    let with_uid = [repo[0], repo[1], ("uid", uid.as_str())];
    c.call("GET", hook, &with_uid, &admin, None, 200).await;
    c.call("PUT", hook, &with_uid, &admin, Some(json!({ "description": "conformance 2", "events": ["repo:push", "pullrequest:created"] })), 200).await;
    c.call("POST", hooks, &repo, &reader, Some(body.clone()), 403)
        .await;
    c.call(
        "PUT",
        hook,
        &with_uid,
        &reader,
        Some(json!({ "active": false })),
        403,
    )
    .await;
    c.call("DELETE", hook, &with_uid, &reader, None, 403).await;
    c.call("DELETE", hook, &with_uid, &admin, None, 204).await;
    c.call("GET", hook, &with_uid, &admin, None, 404).await;
    c.call(
        "PUT",
        hook,
        &with_uid,
        &admin,
        Some(json!({ "active": false })),
        404,
    )
    .await;
    c.call("DELETE", hook, &with_uid, &admin, None, 404).await;
    let missing = [
        ("workspace", t.owner.as_str()),
        ("repo_slug", "no-such-repository"),
    ];
    c.call("GET", hooks, &missing, &admin, None, 404).await;
    c.call("POST", hooks, &missing, &admin, Some(body.clone()), 404)
        .await;

    let ws = [("workspace", t.owner.as_str())];
    let ws_hooks = "/workspaces/{workspace}/hooks";
    let ws_hook = "/workspaces/{workspace}/hooks/{uid}";
    c.call("GET", ws_hooks, &ws, &admin, None, 200).await;
    let created = c
        .call("POST", ws_hooks, &ws, &admin, Some(body.clone()), 201)
        .await;
    let uid = created["uuid"].as_str().unwrap_or_default().to_owned();
    let ws_uid = [ws[0], ("uid", uid.as_str())];
    c.call("GET", ws_hook, &ws_uid, &admin, None, 200).await;
    c.call(
        "PUT",
        ws_hook,
        &ws_uid,
        &admin,
        Some(json!({ "active": false })),
        200,
    )
    .await;
    c.call("POST", ws_hooks, &ws, &reader, Some(body), 403)
        .await;
    c.call("DELETE", ws_hook, &ws_uid, &admin, None, 204).await;
    c.call(
        "GET",
        ws_hooks,
        &[("workspace", "no-such-workspace")],
        &admin,
        None,
        404,
    )
    .await;

    // The repository listing WebhookSets read.
    let listing = "/repositories/{workspace}";
    c.call("GET", listing, &ws, &admin, None, 200).await;
    c.call(
        "GET",
        "/repositories/{workspace}?q=project.key%3D%22PROJ%22&pagelen=100",
        &ws,
        &admin,
        None,
        200,
    )
    .await;
    c.call(
        "GET",
        listing,
        &[("workspace", "no-such-workspace")],
        &admin,
        None,
        404,
    )
    .await;

    c.assert_complete("hook", documented(&spec_doc(file)));
}

#[tokio::test]
async fn data_center_webhook_operations_conform_to_the_data_center_spec() {
    let file = "bitbucket-datacenter-9.4.webhooks.json";
    let spec = Spec::load(file, "");
    let t = target("DC", "DataCenter", "PLAT/api", "/rest").await;
    let mut c = Checker::new(&spec, &t);
    let (admin, reader) = (t.admin.clone(), t.reader.clone());
    for (level, params) in [
        (
            "/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks",
            vec![
                ("projectKey", t.owner.as_str()),
                ("repositorySlug", t.slug.as_str()),
            ],
        ),
        (
            "/api/latest/projects/{projectKey}/webhooks",
            vec![("projectKey", t.owner.as_str())],
        ),
    ] {
        c.call("GET", level, &params, &admin, None, 200).await;
        let body = json!({ "name": "conformance", "url": t.receiver, "active": true,
                           "events": ["repo:refs_changed"], "configuration": { "secret": "conformance-secret" } });
        let created = c
            .call("POST", level, &params, &admin, Some(body.clone()), 200)
            .await;
        if let Some((sim, _)) = &t._sim {
            // 9.x servers were seen answering a create with 201 and an empty
            // `configuration`: the simulator's variant answers as they do.
            let ctl = sim.control();
            ctl.variants(json!({ "dcCreateStatus": 201, "dcWriteConfiguration": "empty" }))
                .await
                .expect("variant");
            let mut observed = body.clone();
            observed["url"] = json!(format!("{}/observed", t.receiver));
            let answer = c
                .call_as("POST", level, &params, &admin, Some(observed), 201, 200)
                .await;
            assert_eq!(answer["configuration"], json!({}), "{answer}");
            ctl.variants(json!({})).await.expect("defaults");
        }
        c.call(
            "POST",
            level,
            &params,
            &admin,
            Some(json!({ "name": "x", "url": t.receiver, "events": ["repo:push"] })),
            400,
        )
        .await;
        c.call("POST", level, &params, &reader, Some(body), 401)
            .await;
        let id = created["id"].as_u64().unwrap_or_default().to_string();
        let mut with_id = params.clone();
        with_id.push(("webhookId", id.as_str()));
        let one = format!("{level}/{{webhookId}}");
        c.call("GET", &one, &with_id, &admin, None, 200).await;
        c.call(
            "PUT",
            &one,
            &with_id,
            &admin,
            Some(json!({ "name": "conformance 2", "events": ["repo:refs_changed", "pr:opened"] })),
            200,
        )
        .await;
        if level.contains("/repos/") {
            c.call(
                "GET",
                &format!("{level}/search?scopeType=repository"),
                &params,
                &admin,
                None,
                200,
            )
            .await;
        }
        // What the operator reads: the listing with every hook's statistics.
        c.call(
            "GET",
            &format!("{level}?statistics=true&start=0&limit=100"),
            &params,
            &admin,
            None,
            200,
        )
        .await;
        c.call(
            "GET",
            &format!("{level}/{{webhookId}}/statistics"),
            &with_id,
            &admin,
            None,
            200,
        )
        .await;
        c.call(
            "GET",
            &format!("{level}/{{webhookId}}/statistics/summary"),
            &with_id,
            &admin,
            None,
            200,
        )
        .await;
        // As live 9.x servers need it: `url` with the id, the TLS setting and `{}`.
        let target = t.receiver.replace(':', "%3A").replace('/', "%2F");
        c.call(
            "POST",
            &format!("{level}/test?webhookId={id}&url={target}&sslVerificationRequired=true"),
            &params,
            &admin,
            Some(json!({})),
            200,
        )
        .await;
        // `latest` after one real delivery (the project-level operation documents no 204).
        if let Some((sim, _)) = &t._sim {
            sim.control()
                .emit(&format!("{}/{}", t.owner, t.slug), "repo:refs_changed")
                .await
                .expect("emit");
        }
        c.call(
            "GET",
            &format!("{level}/{{webhookId}}/latest"),
            &with_id,
            &admin,
            None,
            200,
        )
        .await;
        c.call("DELETE", &one, &with_id, &admin, None, 204).await;
        c.call("GET", &one, &with_id, &admin, None, 404).await;
        c.call("DELETE", &one, &with_id, &admin, None, 404).await;
    }
    let repo_level = "/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks";
    c.call(
        "GET",
        repo_level,
        &[
            ("projectKey", t.owner.as_str()),
            ("repositorySlug", "no-such-repository"),
        ],
        &admin,
        None,
        404,
    )
    .await;
    // The repository listing WebhookSets read.
    let listing = "/api/latest/projects/{projectKey}/repos";
    let project = [("projectKey", t.owner.as_str())];
    c.call("GET", listing, &project, &admin, None, 200).await;
    c.call("GET", listing, &project, &reader, None, 200).await;
    c.call(
        "GET",
        listing,
        &[("projectKey", "NOSUCH")],
        &admin,
        None,
        404,
    )
    .await;

    // Every project the caller may view (`inventory --all-projects`).
    c.call("GET", "/api/latest/projects", &[], &admin, None, 200)
        .await;
    c.call("GET", "/api/latest/projects", &[], &reader, None, 200)
        .await;

    c.assert_complete("/webhooks", documented(&spec_doc(file)));
}

/// Post Webhooks has no published OpenAPI document: this one is written from the fields
/// docs/bitbucket-api.md lists, with the verbs this project assumes.
fn post_webhooks_spec() -> Value {
    let types: Vec<&str> = bitbucket_events::catalogue::POST_WEBHOOKS_EVENTS
        .iter()
        .map(|(t, _)| *t)
        .collect();
    let config = json!({
        "type": "object",
        "required": ["id", "enabled", "name", "destinations", "eventTypes"],
        "additionalProperties": false,
        "properties": {
            "id": { "type": "integer" }, "enabled": { "type": "boolean" }, "name": { "type": "string" },
            "destinations": { "type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["url"], "additionalProperties": false,
                "properties": { "useUrl": { "type": "boolean" }, "url": { "type": "string" } } } },
            "projectKey": { "type": "string" }, "repositorySlug": { "type": "string" },
            "eventTypes": { "type": "array", "items": { "type": "string", "enum": types } },
            "ignoreCerts": { "type": "boolean" }, "httpMethod": { "type": "string" },
            "enableAuthentication": { "type": "boolean" }, "authenticationType": { "type": "string" },
            "authUsername": { "type": "string" }, "authPassword": { "type": "string", "writeOnly": true }
        }
    });
    let errors = json!({ "type": "object", "properties": { "errors": { "type": "array", "items": {
        "type": "object", "properties": { "context": {}, "message": { "type": "string" }, "exceptionName": { "type": "string" } } } } } });
    let ok = |schema: Value| json!({ "content": { "application/json": { "schema": schema } } });
    let err = ok(errors);
    json!({ "paths": {
        "/configurations": {
            "get": { "responses": { "200": ok(json!({ "type": "array", "items": config })), "401": err, "404": err } },
            "post": { "responses": { "200": ok(config.clone()), "400": err, "401": err, "404": err } }
        },
        "/configurations/{id}": {
            "get": { "responses": { "200": ok(config.clone()), "401": err, "404": err } },
            "put": { "responses": { "200": ok(config.clone()), "400": err, "401": err, "404": err } },
            "delete": { "responses": { "204": {}, "401": err, "404": err } }
        },
        "/configurations/event-types": { "get": { "responses": { "200": ok(json!({ "type": "array", "items": { "type": "string", "enum": types } })) } } }
    } })
}

#[tokio::test]
async fn post_webhooks_operations_conform_to_the_documented_fields() {
    let doc = post_webhooks_spec();
    let spec = Spec::inline(doc.clone());
    let t = target("PW", "PostWebhooks", "PLAT/web", "/rest/webhook/2.0").await;
    let mut c = Checker::new(&spec, &t);
    let (admin, reader) = (t.admin.clone(), t.reader.clone());
    c.call("GET", "/configurations/event-types", &[], &admin, None, 200)
        .await;
    let list = format!(
        "/configurations?projectKey={}&repositorySlug={}",
        t.owner, t.slug
    );
    c.call("GET", &list, &[], &admin, None, 200).await;
    let body = json!({ "name": "conformance", "enabled": true, "projectKey": t.owner, "repositorySlug": t.slug,
                       "destinations": [{ "useUrl": true, "url": t.receiver }],
                       "eventTypes": ["ABSTRACT_REPOSITORY_REFS_CHANGED"], "authPassword": "never-returned",
                       "enableAuthentication": true, "authUsername": "ci" });
    let created = c
        .call(
            "POST",
            "/configurations",
            &[],
            &admin,
            Some(body.clone()),
            200,
        )
        .await;
    c.call("POST", "/configurations", &[], &reader, Some(body), 401)
        .await;
    c.call(
        "POST",
        "/configurations",
        &[],
        &admin,
        Some(
            json!({ "name": "x", "projectKey": t.owner, "repositorySlug": t.slug,
        "destinations": [{ "url": t.receiver }], "eventTypes": ["repo:push"] }),
        ),
        400,
    )
    .await;
    let id = created["id"].as_u64().unwrap_or_default().to_string();
    let one = [("id", id.as_str())];
    c.call("GET", "/configurations/{id}", &one, &admin, None, 200)
        .await;
    c.call(
        "PUT",
        "/configurations/{id}",
        &one,
        &admin,
        // PUT replaces the configuration: the whole of it goes back.
        Some(json!({ "name": "conformance 2", "enabled": true, "projectKey": t.owner, "repositorySlug": t.slug,
                     "destinations": [{ "useUrl": true, "url": t.receiver }],
                     "eventTypes": ["PULL_REQUEST_OPENED"] })),
        200,
    )
    .await;
    c.call("DELETE", "/configurations/{id}", &one, &reader, None, 401)
        .await;
    c.call("DELETE", "/configurations/{id}", &one, &admin, None, 204)
        .await;
    c.call("GET", "/configurations/{id}", &one, &admin, None, 404)
        .await;
    c.assert_complete("/", documented(&doc));
}
