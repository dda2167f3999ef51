//! The CRDs on a real kube-apiserver: examples are accepted, bad manifests are rejected at
//! admission with a message of their own, printer columns, `kubectl explain`, the
//! `bitbucket` category and the status subresource.

use std::path::{Path, PathBuf};

use bitbucket_webhook_operator::api::{FIELD_MANAGER, Webhook};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use testenv::ControlPlane;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn plane() -> &'static ControlPlane {
    testenv::shared(&repo_path("crds"))
}

fn apply(plane: &ControlPlane, ns: &str, yaml: &str) -> (bool, String) {
    let out = plane
        .kubectl_stdin(["apply", "-n", ns, "-f", "-"], yaml)
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A valid Webhook with `spec` lines replaced or added (indented by four spaces).
fn webhook(name: &str, spec: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("connectionRef", "\n      name: acme-cloud".to_owned()),
        ("repository", " acme/api".to_owned()),
        ("url", " https://ci.example.com/hooks".to_owned()),
    ];
    for (key, value) in spec {
        let value = format!(" {value}");
        match fields.iter_mut().find(|(k, _)| k == key) {
            Some(field) => field.1 = value,
            None => fields.push((key, value)),
        }
    }
    let mut yaml = format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata:\n  name: {name}\nspec:\n"
    );
    for (key, value) in fields {
        if value.trim() != "<absent>" {
            yaml.push_str(&format!("  {key}:{value}\n"));
        }
    }
    yaml
}

fn connection(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: BitbucketConnection\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const AUTH: &str = "  auth:\n    type: Bearer\n    secretRef:\n      name: token\n";

#[test]
fn every_example_is_accepted() {
    let plane = plane();
    let ns = plane.namespace("examples").expect("namespace");
    let examples = repo_path("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // Needs Flux's CRDs: tests/flux_receiver.rs applies it beside the real controller.
        .filter(|p| !p.ends_with("flux-receiver.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "one example per backend at least");
    for file in files {
        let out = plane
            .kubectl_ok(
                ["apply", "-n", &ns, "-f"]
                    .map(Into::into)
                    .into_iter()
                    .chain([file.clone().into_os_string()]),
            )
            .unwrap_or_else(|e| panic!("{} was rejected: {e}", file.display()));
        assert!(
            out.contains("created") || out.contains("configured") || out.contains("unchanged"),
            "{out}"
        );
    }
    // Defaults were filled in by the apiserver.
    let events = plane
        .kubectl_ok(["get", "-n", &ns, "webhook", "ci-trigger", "-o", "jsonpath={.spec.active} {.spec.deletionPolicy} {.spec.adoption} {.spec.driftPolicy} {.spec.managementPolicy} {.spec.connectionRef.kind}"])
        .expect("get webhook");
    assert_eq!(
        events,
        "true Delete IfMatchingURL Enforce Manage BitbucketConnection"
    );
}

#[test]
fn bad_manifests_are_rejected_at_admission_with_their_own_message() {
    let plane = plane();
    let ns = plane.namespace("bad-manifests").expect("namespace");
    let long_title = "t".repeat(256);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "relative url",
            webhook("relative-url", &[("url", "ci.example.com/hooks")]),
            "url must be an absolute http:// or https:// URL with a host",
        ),
        (
            "ftp url",
            webhook("ftp-url", &[("url", "ftp://ci.example.com/hooks")]),
            "url must be an absolute http:// or https:// URL with a host",
        ),
        (
            "credentials in url",
            webhook(
                "creds-url",
                &[("url", "https://bot:hunter2@ci.example.com/hooks")],
            ),
            "url must not contain a user name or password",
        ),
        (
            "missing url",
            webhook("missing-url", &[("url", "<absent>")]),
            "set exactly one of url and urlFrom",
        ),
        (
            "url and urlFrom",
            webhook("both-urls", &[("urlFrom", "{receiverRef: {name: flux}}")]),
            "set exactly one of url and urlFrom",
        ),
        (
            "urlFrom naming two sources",
            webhook(
                "two-sources",
                &[
                    ("url", "<absent>"),
                    (
                        "urlFrom",
                        "{receiverRef: {name: flux}, secretKeyRef: {name: s, key: url}}",
                    ),
                ],
            ),
            "urlFrom takes exactly one of receiverRef, configMapKeyRef and secretKeyRef",
        ),
        (
            "receiver baseURL not a URL",
            webhook(
                "bad-base",
                &[
                    ("url", "<absent>"),
                    (
                        "urlFrom",
                        "{receiverRef: {name: flux, baseURL: flux.example.com}}",
                    ),
                ],
            ),
            "baseURL must be an absolute http:// or https:// URL with a host",
        ),
        (
            "empty events",
            webhook("empty-events", &[("events", "[]")]),
            "spec.events: Invalid value: 0: spec.events in body should have at least 1 items",
        ),
        (
            "duplicate events",
            webhook("dup-events", &[("events", "[repo:push, repo:push]")]),
            "spec.events[1]: Duplicate value: \"repo:push\"",
        ),
        (
            "malformed event name",
            webhook("bad-event", &[("events", "[\"Repo Push\"]")]),
            "spec.events[0] in body should match",
        ),
        (
            "title over 255 characters",
            webhook("long-title", &[("title", &long_title)]),
            "spec.title: Too long: may not be more than 255 bytes",
        ),
        (
            "title with a line break",
            webhook("newline-title", &[("title", "\"two\\nlines\"")]),
            "title must not contain control characters",
        ),
        (
            "repository without a slug",
            webhook("bad-repo", &[("repository", "acme")]),
            "repository must look like \"workspace/repo_slug\"",
        ),
        (
            "repository with a space",
            webhook("bad-repo-2", &[("repository", "\"acme/my repo\"")]),
            "repository must look like \"workspace/repo_slug\"",
        ),
        (
            "a project scope naming a repository",
            webhook(
                "bad-project",
                &[("repository", "PRJ/app"), ("scope", "Project")],
            ),
            "a project key (Data Center) alone for scope Workspace or Project",
        ),
        (
            "an unknown scope",
            webhook("bad-scope", &[("scope", "Organisation")]),
            "spec.scope: Unsupported value: \"Organisation\"",
        ),
        (
            "unknown connectionRef kind",
            webhook(
                "bad-kind",
                &[("connectionRef", "{kind: GitHubConnection, name: x}")],
            ),
            "spec.connectionRef.kind: Unsupported value: \"GitHubConnection\"",
        ),
        (
            "connectionRef without a name",
            webhook(
                "no-conn-name",
                &[("connectionRef", "{kind: BitbucketConnection}")],
            ),
            "spec.connectionRef.name: Required value",
        ),
        (
            "unknown deletionPolicy",
            webhook("bad-deletion", &[("deletionPolicy", "Keep")]),
            "spec.deletionPolicy: Unsupported value: \"Keep\"",
        ),
        (
            "unknown driftPolicy",
            webhook("bad-drift", &[("driftPolicy", "Ignore")]),
            "spec.driftPolicy: Unsupported value: \"Ignore\"",
        ),
        (
            "unknown managementPolicy",
            webhook("bad-management", &[("managementPolicy", "ReadOnly")]),
            "spec.managementPolicy: Unsupported value: \"ReadOnly\"",
        ),
        (
            "unknown adoption",
            webhook("bad-adoption", &[("adoption", "Always")]),
            "spec.adoption: Unsupported value: \"Always\"",
        ),
        (
            "secretRef without a name",
            webhook("bad-secret", &[("secretRef", "{key: secret}")]),
            "spec.secretRef.name: Required value",
        ),
        (
            "unknown flavor",
            connection("bad-flavor", &format!("  flavor: GitLab\n{AUTH}")),
            "spec.flavor: Unsupported value: \"GitLab\"",
        ),
        (
            "Data Center without baseURL",
            connection("dc-no-url", &format!("  flavor: DataCenter\n{AUTH}")),
            "baseURL is required for the DataCenter and PostWebhooks flavors",
        ),
        (
            "baseURL not http(s)",
            connection(
                "dc-bad-url",
                &format!("  flavor: DataCenter\n  baseURL: bitbucket.example.com\n{AUTH}"),
            ),
            "baseURL must be an absolute http:// or https:// URL with a host",
        ),
        (
            "zero request budget",
            connection(
                "zero-budget",
                &format!("  flavor: Cloud\n{AUTH}  rateLimit:\n    requestsPerHour: 0\n"),
            ),
            "spec.rateLimit.requestsPerHour: Invalid value: 0: spec.rateLimit.requestsPerHour in body should be greater than or equal to 1",
        ),
        (
            "unknown auth type",
            connection(
                "bad-auth",
                "  flavor: Cloud\n  auth:\n    type: OAuth\n    secretRef:\n      name: token\n",
            ),
            "spec.auth.type: Unsupported value: \"OAuth\"",
        ),
    ];
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (what, yaml, expected) in &cases {
        let (ok, output) = apply(plane, &ns, yaml);
        if ok || !output.contains(expected) {
            failures.push(format!(
                "{what}: expected a rejection containing {expected:?}, got (success={ok}):\n{output}"
            ));
        }
        // `check` refuses it offline with the API server's words.
        let report =
            bitbucket_webhook_operator::check::check(&[("case.yaml".into(), yaml.clone())], None);
        let offline: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
        if !offline.iter().any(|f| f.contains(expected)) {
            failures.push(format!(
                "{what}: check should say {expected:?}, said {offline:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Nothing of the rejected objects was stored.
    let stored = plane
        .kubectl_ok([
            "get",
            "-n",
            &ns,
            "webhooks,bitbucketconnections",
            "-o",
            "name",
        ])
        .expect("list");
    assert_eq!(stored.trim(), "", "rejected objects must not exist");
}

#[test]
fn repository_and_connection_cannot_change() {
    let plane = plane();
    let ns = plane.namespace("move").expect("namespace");
    let (ok, out) = apply(plane, &ns, &webhook("moved", &[]));
    assert!(ok, "{out}");
    for (what, spec, field) in [
        (
            "repository",
            [("repository", "acme/other")],
            "spec.repository",
        ),
        (
            "connectionRef",
            [("connectionRef", "\n      name: another")],
            "spec.connectionRef",
        ),
    ] {
        let (ok, out) = apply(plane, &ns, &webhook("moved", &spec));
        assert!(!ok, "{what} changed: {out}");
        assert!(
            out.contains(field) && out.contains("a hook does not move"),
            "{what}: {out}"
        );
    }
    // Everything else may change.
    let (ok, out) = apply(
        plane,
        &ns,
        &webhook("moved", &[("url", "https://ci.example.com/other")]),
    );
    assert!(ok, "{out}");
    // Nor does the level: a workspace hook is another hook.
    let (ok, out) = apply(
        plane,
        &ns,
        &webhook("lifted", &[("repository", "acme"), ("scope", "Workspace")]),
    );
    assert!(ok, "{out}");
    let (ok, out) = apply(
        plane,
        &ns,
        &webhook("lifted", &[("repository", "acme"), ("scope", "Project")]),
    );
    assert!(!ok && out.contains("scope cannot change"), "{out}");
}

#[tokio::test]
async fn printer_columns_and_status_subresource() {
    let plane = plane();
    let ns = plane.namespace("columns").expect("namespace");
    // A status in the applied manifest is dropped: status is a subresource.
    let yaml = format!(
        "{}status:\n  webhookId: forged\n",
        webhook("columns", &[("events", "[repo:push]")])
    );
    let (ok, output) = apply(plane, &ns, &yaml);
    assert!(ok, "{output}");
    let client = plane.client().await.expect("client");
    let api: Api<Webhook> = Api::namespaced(client, &ns);
    let hook = api.get("columns").await.expect("get");
    assert_eq!(
        hook.status, None,
        "status must not be writable through the main resource"
    );

    // Through the status subresource, by server-side apply, it is.
    let status = json!({
        "apiVersion": "bitbucket.hooks.dev/v1alpha1",
        "kind": "Webhook",
        "status": {
            "webhookId": "{4c1e0f6a-0000-4000-8000-000000000001}",
            "delivery": { "health": "Healthy" },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Synced",
                "message": "the webhook on Bitbucket equals the spec",
                "lastTransitionTime": "2026-11-23T10:00:00Z"
            }]
        }
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status("columns", &params, &Patch::Apply(&status))
        .await
        .expect("status apply");
    // A spec change sent to the status subresource is ignored.
    let spec_via_status = json!({"spec": {"url": "https://elsewhere.example.com/"}});
    api.patch_status(
        "columns",
        &PatchParams::default(),
        &Patch::Merge(&spec_via_status),
    )
    .await
    .expect("merge patch on status");
    let hook = api.get("columns").await.expect("get");
    assert_eq!(hook.spec.settings.url, "https://ci.example.com/hooks");
    let status = hook.status.expect("status written");
    assert_eq!(
        status.webhook_id.as_deref(),
        Some("{4c1e0f6a-0000-4000-8000-000000000001}")
    );

    let table = plane
        .kubectl_ok(["get", "bbhook", "-n", &ns])
        .expect("kubectl get bbhook");
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REPOSITORY",
            "URL",
            "ACTIVE",
            "READY",
            "DELIVERY",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..6],
        [
            "columns",
            "acme/api",
            "https://ci.example.com/hooks",
            "true",
            "True",
            "Healthy"
        ],
        "{table}"
    );

    let wide = plane
        .kubectl_ok(["get", "bbhook", "-n", &ns, "-o", "wide"])
        .expect("kubectl get -o wide");
    assert!(
        wide.contains("REASON") && wide.contains("{4c1e0f6a-0000-4000-8000-000000000001}"),
        "{wide}"
    );
}

#[test]
fn kubectl_explain_shows_field_descriptions() {
    let plane = plane();
    // kubectl wraps the text itself; compare with whitespace collapsed.
    let explain = |path: &str| {
        let out = plane
            .kubectl_ok(["explain", path])
            .expect("kubectl explain");
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let out = explain("webhook.spec.events");
    assert!(
        out.contains(
            "The events that trigger a delivery, in the vocabulary of the connection's flavor"
        ),
        "{out}"
    );
    assert!(out.contains("\"repo:refs_changed\""), "{out}");
    let out = explain("bitbucketconnection.spec.rateLimit.requestsPerHour");
    assert!(out.contains("The operator never exceeds it."), "{out}");
    let out = explain("webhook");
    assert!(
        out.contains("A Bitbucket repository webhook the operator keeps in sync with Bitbucket."),
        "{out}"
    );
    let out = explain("clusterbitbucketconnection.spec.allowedRepositories");
    assert!(out.contains("Glob patterns"), "{out}");
}

#[test]
fn the_bitbucket_category_lists_all_three_kinds() {
    let plane = plane();
    let ns = plane.namespace("category").expect("namespace");
    let yaml = format!(
        "{}---\n{}---\napiVersion: bitbucket.hooks.dev/v1alpha1\nkind: ClusterBitbucketConnection\nmetadata:\n  name: category-test\nspec:\n  flavor: Cloud\n{AUTH}",
        webhook("category", &[]),
        connection("acme-cloud", &format!("  flavor: Cloud\n{AUTH}"))
    );
    let (ok, output) = apply(plane, &ns, &yaml);
    assert!(ok, "{output}");
    let out = plane
        .kubectl_ok(["get", "bitbucket", "-n", &ns, "-o", "name"])
        .expect("kubectl get bitbucket");
    for expected in [
        "bitbucketconnection.bitbucket.hooks.dev/acme-cloud",
        "clusterbitbucketconnection.bitbucket.hooks.dev/category-test",
        "webhook.bitbucket.hooks.dev/category",
    ] {
        assert!(
            out.lines().any(|l| l == expected),
            "{expected} missing from:\n{out}"
        );
    }
    let short = plane
        .kubectl_ok(["get", "bbconn,cbbconn,bbhook", "-n", &ns, "-o", "name"])
        .expect("short names");
    assert_eq!(short.lines().count(), out.lines().count(), "{short}");
}

#[test]
fn check_passes_the_examples_and_fails_bad_files_with_file_and_line() {
    let bin = env!("CARGO_BIN_EXE_bitbucket-webhook-operator");
    let good = std::process::Command::new(bin)
        .arg("check")
        .arg(repo_path("examples"))
        .output()
        .expect("check runs");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    let dir = std::env::temp_dir().join(format!("bbwo-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("hooks.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n---\n\
         apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {name: ci}\nspec:\n  \
         connectionRef: {name: dc}\n  repository: PLAT/api\n  url: https://ci.example.com/hook\n  \
         events: [repo:push]\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin)
        .args(["check", "--flavor", "DataCenter"])
        .arg(&bad)
        .output()
        .expect("check runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}:12: Webhook ci: spec.events: event repo:push is a Cloud event, not a DataCenter one (did you mean repo:refs_changed?)",
            bad.display()
        )),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 problem in 1 objects checked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
