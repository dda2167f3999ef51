//! Pure: hooks as listed -> Webhook manifests that adopt them unchanged, and a sentence
//! for everything a manifest cannot say.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::api::{Flavor, Scope};
use crate::bitbucket::{Place, RemoteHook, SecretState};

/// Where the manifests point, as the user names it on the command line.
#[derive(Clone, Debug)]
pub struct Target {
    pub flavor: Flavor,
    /// The (Cluster)BitbucketConnection the Webhooks reference.
    pub connection: String,
    pub cluster_connection: bool,
    /// `metadata.namespace`, when given.
    pub namespace: Option<String>,
    /// The Secret holding a hook's signing secret (key `secret`), for hooks that have one.
    pub secret_name: String,
}

/// The manifests (in the order given) and what the user must know about them.
#[derive(Debug, Default)]
pub struct Export {
    pub manifests: Vec<Value>,
    pub notes: Vec<String>,
}

/// The Webhook name for a hook: the place, the hook's title (or URL host), and a hash
/// of place + id, so a second export names the same hook the same way.
pub fn name_for(place: &Place, hook: &RemoteHook) -> String {
    let label = match place {
        Place::Repository(r) => r.slug.clone(),
        other => other.owner().to_owned(),
    };
    let what = if hook.title.trim().is_empty() {
        url_host(&hook.url)
    } else {
        hook.title.clone()
    };
    let hash = short_hash(&format!("{place}|{}", hook.id));
    let mut base = dns_label(&format!("{label}-{what}"));
    base.truncate(63 - hash.len() - 1);
    let base = base.trim_end_matches('-');
    if base.is_empty() {
        format!("hook-{hash}")
    } else {
        format!("{base}-{hash}")
    }
}

fn url_host(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':', '?', '#']).next())
        .unwrap_or("hook")
        .to_owned()
}

/// Lower case letters, digits and single dashes, starting with a letter or digit.
fn dns_label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Six hex digits of FNV-1a: stable across runs and platforms (std's hasher is not).
fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:06x}", hash & 0xff_ffff)
}

/// Manifests for the hooks of each place. A hook the operator would refuse or change
/// on adoption gets a note saying so; of two hooks with one URL on one place only the
/// first can be managed (a Webhook adopts by URL), so the second is left out with a note.
pub fn export(target: &Target, listed: &[(Place, Vec<RemoteHook>)]) -> Export {
    let mut out = Export::default();
    let mut names = BTreeSet::new();
    for (place, hooks) in listed {
        let mut urls: BTreeMap<&str, &str> = BTreeMap::new();
        for hook in hooks {
            if let Some(first) = urls.get(hook.url.as_str()) {
                out.notes.push(format!(
                    "{place}: hook {} has the URL of hook {first}; a Webhook adopts one hook per URL, so it is left out (delete one of them in Bitbucket)",
                    hook.id
                ));
                continue;
            }
            urls.insert(&hook.url, &hook.id);
            let name = name_for(place, hook);
            if !names.insert(name.clone()) {
                out.notes.push(format!(
                    "{place}: hook {} would be named {name} like another; it is left out",
                    hook.id
                ));
                continue;
            }
            let (manifest, notes) = manifest(target, place, hook, &name);
            out.notes.extend(notes);
            out.manifests.push(manifest);
        }
    }
    out
}

/// The hook's events for the manifest, sorted (None: it has none, and the manifest
/// leaves them out), with notes on what the operator would refuse.
fn events(
    target: &Target,
    hook: &RemoteHook,
    about: &str,
    notes: &mut Vec<String>,
) -> Option<Value> {
    let mut events = hook.events.clone();
    events.sort();
    events.dedup();
    let backend = target.flavor.events();
    let unknown: Vec<String> = events
        .iter()
        .filter_map(|e| bitbucket_events::check_event(backend, e).message(e, backend))
        .collect();
    if !unknown.is_empty() {
        notes.push(format!(
            "{about}: the operator would refuse its events ({}); fix events before applying",
            unknown.join("; ")
        ));
    }
    if events.is_empty() {
        notes.push(format!(
            "{about}: has no events; the manifest leaves events out, so the flavor's push event will be set"
        ));
        return None;
    }
    Some(json!(events))
}

/// One Webhook manifest and its notes.
fn manifest(target: &Target, place: &Place, hook: &RemoteHook, name: &str) -> (Value, Vec<String>) {
    let mut notes = Vec::new();
    let about = format!("{place}: hook {} ({name})", hook.id);
    let (repository, scope) = match place {
        Place::Repository(r) => (r.to_string(), Scope::Repository),
        Place::Project(k) => (k.clone(), Scope::Project),
        Place::Workspace(w) => (w.clone(), Scope::Workspace),
    };
    let mut connection = json!({ "name": target.connection });
    if target.cluster_connection {
        connection["kind"] = json!("ClusterBitbucketConnection");
    }
    let mut spec = json!({ "connectionRef": connection, "repository": repository });
    if scope != Scope::Repository {
        spec["scope"] = json!(scope);
    }
    if hook.title.trim().is_empty() {
        notes.push(format!(
            "{about}: has no name; the Webhook's default title (<namespace>/<name>) will be written to it"
        ));
    } else {
        spec["title"] = json!(hook.title);
    }
    spec["url"] = json!(hook.url);
    if let Some(events) = events(target, hook, &about, &mut notes) {
        spec["events"] = events;
    }
    if !hook.active {
        spec["active"] = json!(false);
    }
    if hook.skip_cert_verification {
        spec["skipCertVerification"] = json!(true);
    }
    match &hook.secret {
        SecretState::Unset => {}
        SecretState::Set | SecretState::Known(_) => {
            spec["secretRef"] = json!({ "name": target.secret_name, "key": "secret" });
            let how = match (&hook.secret, target.flavor) {
                (SecretState::Known(_), _) => {
                    "when the Secret holds the same value as the hook (shown in its settings), adoption writes nothing"
                }
                _ => {
                    "Bitbucket Cloud never shows a secret, so the first sync sets it from the Secret (one write)"
                }
            };
            notes.push(format!(
                "{about}: signs its deliveries; create Secret {} with key \"secret\" before applying ({how})",
                target.secret_name
            ));
        }
    }
    let mut metadata = json!({ "name": name });
    if let Some(ns) = &target.namespace {
        metadata["namespace"] = json!(ns);
    }
    let manifest = json!({
        "apiVersion": "bitbucket.hooks.dev/v1alpha1",
        "kind": "Webhook",
        "metadata": metadata,
        "spec": spec,
    });
    (manifest, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitbucket::RepoRef;

    fn hook(id: &str, title: &str, url: &str, events: &[&str]) -> RemoteHook {
        RemoteHook {
            id: id.into(),
            title: title.into(),
            url: url.into(),
            active: true,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            ..RemoteHook::default()
        }
    }

    fn target(flavor: Flavor) -> Target {
        Target {
            flavor,
            connection: "bitbucket".into(),
            cluster_connection: false,
            namespace: Some("ci".into()),
            secret_name: "webhook-secret".into(),
        }
    }

    fn repo(text: &str) -> Place {
        Place::Repository(RepoRef::parse(text).expect("repo"))
    }

    #[test]
    fn names_are_stable_readable_labels() {
        let place = repo("acme/API_Service");
        let h = hook("{1a}", "CI Trigger!", "https://ci.example.com/x", &[]);
        let name = name_for(&place, &h);
        assert!(name.starts_with("api-service-ci-trigger-"), "{name}");
        assert_eq!(name, name_for(&place, &h), "the same every run");
        assert_ne!(name, name_for(&repo("acme/other"), &h));
        let untitled = hook("7", "", "https://chat.example.com:8443/hook", &[]);
        assert!(name_for(&place, &untitled).starts_with("api-service-chat-example-com-"));
        let long = hook("8", &"x".repeat(300), "https://a", &[]);
        assert!(name_for(&place, &long).len() <= 63);
        let symbols = hook("9", "!!!", "https://a", &[]);
        assert!(!name_for(&Place::Project("~".into()), &symbols).starts_with('-'));
    }

    #[test]
    fn manifests_say_what_adoption_needs_and_notes_say_the_rest() {
        let mut signed = hook(
            "2",
            "signed",
            "https://ci.example.com/b",
            &["repo:refs_changed"],
        );
        signed.secret = SecretState::Known("s".to_owned().into());
        signed.active = false;
        let listed = vec![
            (
                repo("PRJ/app"),
                vec![
                    hook(
                        "1",
                        "CI",
                        "https://ci.example.com/a",
                        &["pr:opened", "repo:refs_changed"],
                    ),
                    signed,
                    hook("3", "again", "https://ci.example.com/a", &["pr:opened"]),
                    hook("4", "", "https://ci.example.com/c", &["repo:push"]),
                ],
            ),
            (
                Place::Project("PRJ".into()),
                vec![hook(
                    "5",
                    "all",
                    "https://ci.example.com/p",
                    &["repo:refs_changed"],
                )],
            ),
        ];
        let out = export(&target(Flavor::DataCenter), &listed);
        assert_eq!(
            out.manifests.len(),
            4,
            "the second hook with one URL is left out"
        );
        let first = &out.manifests[0];
        assert_eq!(first["metadata"]["namespace"], "ci");
        assert_eq!(first["spec"]["repository"], "PRJ/app");
        assert_eq!(first["spec"]["title"], "CI");
        assert_eq!(
            first["spec"]["events"],
            json!(["pr:opened", "repo:refs_changed"])
        );
        assert!(first["spec"].get("scope").is_none());
        assert!(
            first["spec"].get("active").is_none(),
            "active is the default"
        );
        let signed = &out.manifests[1];
        assert_eq!(signed["spec"]["active"], false);
        assert_eq!(signed["spec"]["secretRef"]["name"], "webhook-secret");
        assert!(
            !serde_json::to_string(signed)
                .expect("json")
                .contains("\"s\""),
            "a secret's value is never printed"
        );
        let project = &out.manifests[3];
        assert_eq!(project["spec"]["scope"], "Project");
        assert_eq!(project["spec"]["repository"], "PRJ");
        let notes = out.notes.join("\n");
        assert!(notes.contains("hook 3 has the URL of hook 1"), "{notes}");
        assert!(notes.contains("create Secret webhook-secret"), "{notes}");
        assert!(
            notes.contains("hook 4") && notes.contains("has no name"),
            "{notes}"
        );
        assert!(
            notes.contains("repo:push"),
            "a Cloud event on Data Center: {notes}"
        );
    }
}
