//! The bad-input catalogue, on the real control plane with the simulator: hostile or
//! broken Webhooks, Secrets and connections, and Bitbucket answers that are malformed,
//! truncated, huge, of the wrong type or missing fields. Each case ends in what a user
//! can act on (the API server's refusal, or a condition with a specific reason and
//! message), the operator never panics, keeps its requests few while a case stays
//! broken, and writes to Bitbucket only what the input asked for.

mod support;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::{Flavor, Webhook};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use support::{ADMIN, READER, World};

/// How a case must end.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// kubectl apply fails and says this.
    Refused(&'static str),
    /// The Webhook is Ready and Bitbucket holds one hook whose `field` is the spec's.
    Ready(Field),
    /// `Synced=False` with this reason and a message containing this.
    Fails(&'static str, &'static str),
}

/// A hook field checked against what the Webhook asked for.
#[derive(Clone, Copy, Debug)]
enum Field {
    Url,
    Title,
    Id,
}

struct Case {
    name: &'static str,
    flavor: Flavor,
    /// The manifests to apply, made for the case's world; the Webhook is named "hook".
    manifest: Box<dyn Fn(&World) -> String + Send + Sync>,
    /// A `/_sim/faults` body set before the manifests are applied.
    faults: Option<Value>,
    expect: Expect,
}

fn case(
    name: &'static str,
    flavor: Flavor,
    manifest: impl Fn(&World) -> String + Send + Sync + 'static,
    expect: Expect,
) -> Case {
    Case {
        name,
        flavor,
        manifest: Box::new(manifest),
        faults: None,
        expect,
    }
}

/// A Webhook "hook" with `url` and extra spec lines.
fn hook(url: &'static str, extra: &'static str) -> impl Fn(&World) -> String + Send + Sync {
    move |w: &World| w.webhook_yaml("hook", url, extra)
}

/// The Webhook "hook" with its `events` line replaced.
fn with_events(events: String) -> impl Fn(&World) -> String + Send + Sync {
    move |w: &World| {
        let yaml = w.webhook_yaml("hook", "https://ci.example.com/e", "");
        let start = yaml.find("  events:").unwrap_or(yaml.len());
        let end = yaml[start..]
            .find('\n')
            .map_or(yaml.len(), |e| start + e + 1);
        format!("{}  events: {events}\n{}", &yaml[..start], &yaml[end..])
    }
}

/// A Secret "sig" with `data` and the Webhook "hook" signed with its key "secret".
fn signed(data: &'static str) -> impl Fn(&World) -> String + Send + Sync {
    move |w: &World| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: sig}}\n{data}\n---\n{}",
            w.webhook_yaml(
                "hook",
                "https://ci.example.com/s",
                "  secretRef: {name: sig, key: secret}\n"
            )
        )
    }
}

/// A connection "other" made by `edit` from the world's own, and the Webhook on it.
fn on_connection(edit: fn(&World, String) -> String) -> impl Fn(&World) -> String + Send + Sync {
    move |w: &World| {
        format!(
            "{}---\n{}",
            edit(w, w.connection_yaml("other", ADMIN)),
            w.webhook_yaml("hook", "https://ci.example.com/c", "")
                .replace(
                    "connectionRef: {name: bitbucket}",
                    "connectionRef: {name: other}"
                )
        )
    }
}

/// Bitbucket answers every hook listing of the world's repository with `body` (200).
fn listing_answers(flavor: Flavor, body: String) -> Value {
    let route = match flavor {
        Flavor::Cloud => "GET /2.0/repositories/{workspace}/{repo_slug}/hooks",
        _ => "GET /rest/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks",
    };
    json!({ "errorRate": 1.0, "after": "body", "body": body, "routes": [route] })
}

/// Bitbucket makes the next hook and answers `body` instead of it.
fn create_answers(flavor: Flavor, body: &str) -> Value {
    let route = match flavor {
        Flavor::Cloud => "POST /2.0/repositories/{workspace}/{repo_slug}/hooks",
        _ => "POST /rest/api/latest/projects/{projectKey}/repos/{repositorySlug}/webhooks",
    };
    json!({ "errorRate": 1.0, "count": 1, "after": "body", "body": body, "routes": [route] })
}

fn catalogue() -> Vec<Case> {
    use Expect::{Fails, Ready, Refused};
    use Flavor::{Cloud, DataCenter, PostWebhooks};
    // 2,000 and 2,049 characters: the CRD allows 2,048.
    let long_url: &'static str = format!("https://ci.example.com/{}", "a".repeat(1977)).leak();
    let over_long_url: &'static str = format!("https://ci.example.com/{}", "a".repeat(2026)).leak();
    let many_events = format!(
        "[{}]",
        (0..300)
            .map(|i| format!("\"repo:event_{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let huge = format!("{{\"values\": [], \"pad\": \"{}\"}}", "x".repeat(9 << 20));
    let mut cases = vec![
        // URLs.
        case(
            "ip-literal-url",
            Cloud,
            hook("https://192.0.2.10:8443/hook", ""),
            Ready(Field::Url),
        ),
        case(
            "ipv6-literal-url",
            Cloud,
            hook("https://[2001:db8::1]/hook", ""),
            Ready(Field::Url),
        ),
        case(
            "idn-host-url",
            Cloud,
            hook("https://bücher.example/hook", ""),
            Ready(Field::Url),
        ),
        case("long-url", Cloud, hook(long_url, ""), Ready(Field::Url)),
        case(
            "over-long-url",
            Cloud,
            hook(over_long_url, ""),
            Refused("spec.url: Too long"),
        ),
        case(
            "userinfo-url",
            Cloud,
            hook("https://bot@ci.example.com/h", ""),
            Refused("url must not contain a user name or password"),
        ),
        case(
            "newline-in-url",
            Cloud,
            hook("\"https://ci.example.com/a\\nb\"", ""),
            Refused("url must be an absolute http:// or https:// URL"),
        ),
        case(
            "javascript-url",
            Cloud,
            hook("\"javascript:alert(1)\"", ""),
            Refused("url must be an absolute http:// or https:// URL"),
        ),
        // Events.
        case(
            "unknown-event",
            Cloud,
            with_events("[\"repo:pushed\"]".into()),
            Fails("InvalidSpec", "repo:pushed"),
        ),
        case(
            "data-center-event-on-cloud",
            Cloud,
            with_events("[\"repo:refs_changed\"]".into()),
            Fails("InvalidSpec", "repo:refs_changed"),
        ),
        case(
            "cloud-event-on-data-center",
            DataCenter,
            with_events("[\"repo:push\"]".into()),
            Fails("InvalidSpec", "repo:push"),
        ),
        case(
            "post-webhooks-event-on-cloud",
            Cloud,
            with_events("[\"PULL_REQUEST_OPENED\"]".into()),
            Fails("InvalidSpec", "PULL_REQUEST_OPENED"),
        ),
        case(
            "three-hundred-events",
            Cloud,
            with_events(many_events),
            Refused("spec.events"),
        ),
        // Titles.
        case(
            "unicode-title",
            Cloud,
            hook(
                "https://ci.example.com/u",
                "  title: \"Déploiement 🚀 — نشر\"\n",
            ),
            Ready(Field::Title),
        ),
        case(
            "control-character-title",
            Cloud,
            hook("https://ci.example.com/t", "  title: \"ci\\u0007bell\"\n"),
            Refused("title must not contain control characters"),
        ),
        case(
            "newline-title",
            Cloud,
            hook("https://ci.example.com/t", "  title: \"two\\nlines\"\n"),
            Refused("title must not contain control characters"),
        ),
        // Signing Secrets.
        case(
            "signing-secret-missing",
            Cloud,
            hook("https://ci.example.com/s", "  secretRef: {name: nope}\n"),
            Fails("SecretNotFound", "nope does not exist"),
        ),
        case(
            "signing-secret-key-missing",
            Cloud,
            signed("stringData: {other: x}"),
            Fails("SecretInvalid", "has no key \"secret\""),
        ),
        case(
            "signing-secret-empty",
            Cloud,
            signed("stringData: {secret: \"\"}"),
            Fails("SecretInvalid", "is empty"),
        ),
        case(
            "signing-secret-not-text",
            Cloud,
            signed("data: {secret: /w==}"),
            Fails("SecretInvalid", "is not UTF-8 text"),
        ),
        case(
            "signing-secret-too-long",
            Cloud,
            signed(format!("stringData: {{secret: {}}}", "s".repeat(129)).leak()),
            Fails("InvalidSpec", "longer than the 128 characters"),
        ),
        case(
            "signed-post-webhooks",
            PostWebhooks,
            signed("stringData: {secret: abc}"),
            Fails("InvalidSpec", "does not sign deliveries"),
        ),
        // Connections.
        case(
            "connection-missing",
            Cloud,
            |w: &World| {
                w.webhook_yaml("hook", "https://ci.example.com/c", "")
                    .replace("{name: bitbucket}", "{name: nope}")
            },
            Fails("ConnectionNotFound", "nope does not exist"),
        ),
        case(
            "cluster-connection-missing",
            Cloud,
            |w: &World| {
                w.webhook_yaml("hook", "https://ci.example.com/c", "")
                    .replace(
                        "{name: bitbucket}",
                        "{kind: ClusterBitbucketConnection, name: bbwo-nope}",
                    )
            },
            Fails("ConnectionNotFound", "bbwo-nope does not exist"),
        ),
        case(
            "cross-namespace-reference",
            Cloud,
            |w: &World| {
                w.webhook_yaml("hook", "https://ci.example.com/c", "")
                    .replace("{name: bitbucket}", "{name: bitbucket, namespace: default}")
            },
            Refused("unknown field \"spec.connectionRef.namespace\""),
        ),
        case(
            "connection-secret-missing",
            Cloud,
            on_connection(|_, c| {
                c.replace("secretRef: {name: other-token}", "secretRef: {name: gone}")
            }),
            Fails("SecretNotFound", "gone does not exist"),
        ),
        case(
            "connection-secret-key-renamed",
            Cloud,
            on_connection(|_, c| c.replace("{token: ", "{tok: ")),
            Fails("SecretInvalid", "has no key \"token\""),
        ),
        case(
            "connection-wrong-flavor",
            Cloud,
            on_connection(|_, c| c.replace("flavor: Cloud", "flavor: DataCenter")),
            Fails(
                "InvalidSpec",
                "does not answer as a Bitbucket DataCenter API",
            ),
        ),
        case(
            "connection-nothing-listening",
            Cloud,
            on_connection(|w, c| c.replace(&w.sim.base_url(), "http://127.0.0.1:9")),
            Fails("BitbucketUnavailable", "Connection refused"),
        ),
        case(
            "connection-wrong-path",
            Cloud,
            on_connection(|w, c| c.replace(&w.base_url(), &format!("{}/nope", w.sim.base_url()))),
            Fails("InvalidSpec", "does not answer as a Bitbucket Cloud API"),
        ),
        case(
            "connection-not-a-url",
            Cloud,
            on_connection(|w, c| c.replace(&w.base_url(), "\"not a url\"")),
            Refused("baseURL"),
        ),
        case(
            "connection-unknown-token",
            Cloud,
            on_connection(|_, c| c.replace(&format!("token: {ADMIN}"), "token: who-is-this")),
            Fails("Unauthorized", "rejected the credentials"),
        ),
        case(
            "connection-reader-token",
            Cloud,
            on_connection(|_, c| {
                c.replace(&format!("token: {ADMIN}"), &format!("token: {READER}"))
            }),
            Fails("Forbidden", "repository admin"),
        ),
        case(
            "repository-missing",
            Cloud,
            |w: &World| {
                w.webhook_yaml("hook", "https://ci.example.com/r", "")
                    .replace("repository: acme/api", "repository: acme/nope")
            },
            Fails("RepositoryNotFound", "acme/nope"),
        ),
        case(
            "project-scope-on-cloud",
            Cloud,
            |w: &World| {
                w.webhook_yaml("hook", "https://ci.example.com/p", "  scope: Project\n")
                    .replace("repository: acme/api", "repository: acme")
            },
            Fails("InvalidSpec", "Cloud has no project webhooks"),
        ),
    ];
    // Bitbucket's answers.
    let answers: Vec<(&'static str, Flavor, Value, Expect)> = vec![
        ("listing-malformed", Cloud, listing_answers(Cloud, "{\"values\": [".into()), Fails("UnexpectedResponse", "not the JSON expected")),
        ("listing-html", Cloud, listing_answers(Cloud, "<html><body>502 Bad Gateway</body></html>".into()), Fails("UnexpectedResponse", "not the JSON expected")),
        ("listing-huge", Cloud, listing_answers(Cloud, huge), Fails("UnexpectedResponse", "larger than 8 MiB")),
        ("listing-array", Cloud, listing_answers(Cloud, "[]".into()), Fails("UnexpectedResponse", "not the JSON expected")),
        ("listing-values-not-a-list", Cloud, listing_answers(Cloud, "{\"values\": \"none\"}".into()), Fails("UnexpectedResponse", "not the JSON expected")),
        ("listing-hook-without-url", Cloud, listing_answers(Cloud, "{\"values\": [{\"uuid\": \"{0b5b7e0e-0000-4000-8000-000000000000}\", \"events\": []}]}".into()), Fails("UnexpectedResponse", "not the JSON expected")),
        ("listing-next-other-server", Cloud, listing_answers(Cloud, "{\"values\": [], \"next\": \"https://evil.example/2.0/repositories/acme/api/hooks?page=2\"}".into()), Fails("UnexpectedResponse", "another server")),
        ("dc-listing-no-next-page", DataCenter, listing_answers(DataCenter, "{\"values\": [], \"isLastPage\": false, \"start\": 0, \"size\": 0, \"limit\": 100}".into()), Fails("UnexpectedResponse", "no nextPageStart")),
        ("dc-listing-values-object", DataCenter, listing_answers(DataCenter, "{\"values\": {}, \"isLastPage\": true}".into()), Fails("UnexpectedResponse", "not the JSON expected")),
        ("create-answer-truncated", Cloud, create_answers(Cloud, "{\"uuid\": \"{"), Ready(Field::Id)),
        ("create-answer-empty-object", Cloud, create_answers(Cloud, "{}"), Ready(Field::Id)),
        ("dc-create-answer-html", DataCenter, create_answers(DataCenter, "<html>oops</html>"), Ready(Field::Id)),
    ];
    for (name, flavor, faults, expect) in answers {
        let mut c = case(name, flavor, hook("https://ci.example.com/a", ""), expect);
        c.faults = Some(faults);
        cases.push(c);
    }
    // The next link of the first page leads back to it: found out, not followed forever.
    let mut round = case(
        "listing-next-goes-round",
        Cloud,
        hook("https://ci.example.com/a", ""),
        Fails("UnexpectedResponse", "go round"),
    );
    round.faults = Some(Value::Null);
    cases.push(round);
    cases
}

/// Panics on the operator's threads (its runtime's workers), counted by a panic hook.
static OPERATOR_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_operator_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if matches!(thread.name(), Some("operator" | "tokio-runtime-worker")) {
            OPERATOR_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
}

/// What one case came to, or why it did not.
async fn run(c: &Case) -> Result<String, String> {
    let w = World::new(c.name, c.flavor).await;
    let mut faults = c.faults.clone();
    if faults == Some(Value::Null) {
        // Only now is the simulator's address known.
        let next = format!(
            "{}/2.0/repositories/acme/api/hooks?pagelen=100",
            w.sim.base_url()
        );
        faults = Some(listing_answers(
            c.flavor,
            json!({ "values": [], "next": next }).to_string(),
        ));
    }
    if let Some(f) = faults {
        w.ctl.faults(f).await.map_err(|e| format!("faults: {e}"))?;
    }
    let manifest = (c.manifest)(&w);
    let applied = w.apply(&manifest);
    let writes = |w: &World| {
        let ctl = w.ctl.clone();
        async move {
            ctl.count_where(|m, r| {
                m != "GET"
                    && (r.contains("hooks")
                        || r.contains("webhooks")
                        || r.contains("configurations"))
            })
            .await
            .unwrap_or(u64::MAX)
        }
    };
    match c.expect {
        Expect::Refused(said) => {
            let out = applied.err().ok_or("kubectl accepted it")?;
            if !out.contains(said) {
                return Err(format!("refused without {said:?}: {out}"));
            }
            let line = out.lines().find(|l| l.contains(said)).unwrap_or_default();
            Ok(format!("refused: {}", first_line(line)))
        }
        Expect::Ready(field) => {
            applied.map_err(|e| format!("refused: {e}"))?;
            let h = w.wait_ready("hook").await;
            let hooks = w.hooks().await;
            let [held] = hooks.as_slice() else {
                return Err(format!("{} hooks on Bitbucket, not one", hooks.len()));
            };
            let spec = &h.spec;
            let id = h.status.as_ref().and_then(|s| s.webhook_id.clone());
            let (want, got) = match field {
                Field::Url => (
                    Some(spec.settings.url.clone()),
                    held["url"].as_str().map(str::to_owned),
                ),
                Field::Title => (
                    spec.settings.title.clone(),
                    held["title"].as_str().map(str::to_owned),
                ),
                Field::Id => (id, held["id"].as_str().map(str::to_owned)),
            };
            if want != got {
                return Err(format!(
                    "{field:?}: Bitbucket holds {got:?}, the Webhook says {want:?}"
                ));
            }
            let posts = writes(&w).await;
            if posts != 1 {
                return Err(format!("{posts} writes for one hook"));
            }
            Ok(format!("Ready, {field:?} as asked, one write"))
        }
        Expect::Fails(reason, said) => {
            applied.map_err(|e| format!("refused: {e}"))?;
            // The first answer may be an earlier state (the connection still verifying).
            let h = w
                .wait_webhook(
                    "hook",
                    &format!("Synced=False {reason} saying {said:?}"),
                    |h| {
                        h.status.as_ref().is_some_and(|s| {
                            s.observed_generation == h.metadata.generation
                                && s.conditions.iter().any(|c| {
                                    c.type_ == "Synced"
                                        && c.status == "False"
                                        && c.reason == reason
                                        && c.message.contains(said)
                                })
                        })
                    },
                )
                .await;
            let message = synced_message(&h);
            // Still broken: the operator keeps to its backoff, writes nothing.
            let before = w.ctl.count_where(|_, _| true).await.unwrap_or(0);
            let watched = Instant::now();
            tokio::time::sleep(Duration::from_secs(10)).await;
            let during = w.ctl.count_where(|_, _| true).await.unwrap_or(0) - before;
            // The tests' operator looks again each 4 s resync slot at most; a loop would
            // make hundreds.
            if during > 12 {
                let seen = w.ctl.requests().await.unwrap_or_default();
                return Err(format!(
                    "{during} requests in {:?} while broken: {seen:?}",
                    watched.elapsed()
                ));
            }
            let written = writes(&w).await;
            if written != 0 || !w.hooks().await.is_empty() {
                return Err(format!(
                    "{written} writes for a Webhook that cannot be served"
                ));
            }
            Ok(format!(
                "{reason}: {} ({during} requests in the next 10 s)",
                first_line(&message)
            ))
        }
    }
}

fn synced_message(h: &Webhook) -> String {
    h.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn first_line(text: &str) -> &str {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    &line[..line
        .len()
        .min(line.char_indices().nth(200).map_or(line.len(), |(i, _)| i))]
}

#[tokio::test]
async fn every_bad_input_ends_in_a_specific_error_and_nothing_it_did_not_ask_for() {
    count_operator_panics();
    let mut cases = catalogue();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    // BBWO_BAD_INPUT=name,name runs only those (while working on one).
    if let Ok(only) = std::env::var("BBWO_BAD_INPUT") {
        cases.retain(|c| only.split(',').any(|n| n == c.name));
    }
    // Eight at a time: the machine has two cores and each case has its own simulator.
    let results: Vec<(&str, Result<String, String>)> = futures::stream::iter(&cases)
        .map(|c| async move {
            let outcome = AssertUnwindSafe(run(c)).catch_unwind().await;
            let outcome = outcome.unwrap_or_else(|p| {
                Err(p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()))
            });
            (c.name, outcome)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (name, result) in &results {
        match result {
            Ok(what) => println!("ok   {name}: {what}"),
            Err(why) => {
                println!("FAIL {name}: {why}");
                failed.push(*name);
            }
        }
    }
    assert_eq!(
        OPERATOR_PANICS.load(Ordering::SeqCst),
        0,
        "the operator panicked"
    );
    assert!(
        failed.is_empty(),
        "{} of {} cases failed: {failed:?}",
        failed.len(),
        cases.len()
    );
}
