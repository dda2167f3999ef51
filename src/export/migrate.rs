//! Pure: Data Center (or Post Webhooks) hooks -> what they become on Bitbucket Cloud.
//! Repositories move to the workspace their project is mapped to; a project's own hooks
//! become a WebhookSet over the mapped Cloud project's repositories, or a workspace hook
//! when no Cloud project is named (Cloud has no project hooks). Events are translated
//! through the event catalogue; what Cloud lacks is named and left out.

use std::collections::BTreeMap;

use bitbucket_events::catalogue::translate;
use serde_json::{Value, json};

use super::manifest::{self, Export, Target};
use crate::api::Flavor;
use crate::bitbucket::{Place, RemoteHook, RepoRef, SecretState};

/// Where each Data Center project goes on Cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct Migration {
    /// The hooks' flavor.
    pub from: Flavor,
    /// Project key (upper case) -> (workspace, Cloud project key).
    pub maps: BTreeMap<String, (String, Option<String>)>,
}

impl Migration {
    /// From `--map PROJECT=workspace[/project]` flags.
    pub fn parse(from: Flavor, maps: &[String]) -> Result<Migration, String> {
        if from == Flavor::Cloud {
            return Err(
                "--to Cloud reads Data Center or Post Webhooks hooks; these are Cloud's already"
                    .to_owned(),
            );
        }
        let mut parsed = BTreeMap::new();
        for map in maps {
            let bad =
                || format!("--map {map:?} is not PROJECT=workspace or PROJECT=workspace/PROJECT");
            let (key, to) = map.split_once('=').ok_or_else(bad)?;
            let (workspace, project) = match to.split_once('/') {
                Some((w, p)) => (w, Some(p.to_owned())),
                None => (to, None),
            };
            let names = [Some(key), Some(workspace), project.as_deref()];
            if names
                .iter()
                .flatten()
                .any(|n| n.trim().is_empty() || n.contains(['/', '=', ' ']))
            {
                return Err(bad());
            }
            parsed.insert(key.to_ascii_uppercase(), (workspace.to_owned(), project));
        }
        Ok(Migration { from, maps: parsed })
    }

    /// The Cloud manifests for the hooks listed, and a note for everything left out.
    pub fn export(&self, target: &Target, listed: &[(Place, Vec<RemoteHook>)]) -> Export {
        let mut notes = Vec::new();
        let mut cloud: Vec<(Place, Vec<RemoteHook>)> = Vec::new();
        let mut sets = Vec::new();
        for (place, hooks) in listed {
            let Some((workspace, project)) = self.maps.get(&place.owner().to_ascii_uppercase())
            else {
                notes.push(format!(
                    "{place}: project {} has no --map; its {} hooks are left out",
                    place.owner(),
                    hooks.len()
                ));
                continue;
            };
            let mut moved = Vec::new();
            for hook in hooks {
                let about = format!("{place}: hook {} ({})", hook.id, hook.title);
                if let Some(hook) = self.translated(hook, &about, &mut notes) {
                    moved.push(hook);
                }
            }
            match (place, project) {
                (Place::Repository(r), _) => cloud.push((
                    Place::Repository(RepoRef {
                        owner: workspace.clone(),
                        slug: r.slug.clone(),
                    }),
                    moved,
                )),
                (_, Some(project)) => {
                    for hook in moved {
                        sets.push(set(target, place, workspace, project, &hook, &mut notes));
                    }
                }
                (_, None) => {
                    if !moved.is_empty() {
                        notes.push(format!(
                            "{place}: its {} hooks become hooks of workspace {workspace}, which fire for every repository of the workspace, not only those from {}; map it to a Cloud project (--map {}={workspace}/PROJECT) to keep them to one project",
                            moved.len(),
                            place.owner(),
                            place.owner()
                        ));
                    }
                    cloud.push((Place::Workspace(workspace.clone()), moved));
                }
            }
        }
        let mut out = manifest::export(target, &cloud);
        out.manifests.extend(sets);
        notes.append(&mut out.notes);
        out.notes = notes;
        out
    }

    /// The hook with Cloud's events, or None (with a note) when it keeps none.
    fn translated(
        &self,
        hook: &RemoteHook,
        about: &str,
        notes: &mut Vec<String>,
    ) -> Option<RemoteHook> {
        let from = self.from.events();
        let mut events = Vec::new();
        let mut lost = Vec::new();
        // Sorted and deduplicated where the manifest is written (two events may become one).
        for event in &hook.events {
            match translate(from, bitbucket_events::Backend::Cloud, event) {
                Some(cloud) => events.push(cloud.to_owned()),
                None => lost.push(event.as_str()),
            }
        }
        if !lost.is_empty() {
            notes.push(format!(
                "{about}: Cloud has no event for {}; left out",
                lost.join(", ")
            ));
        }
        if events.is_empty() {
            notes.push(format!(
                "{about}: none of its events exists on Cloud; no manifest"
            ));
            return None;
        }
        // A new hook on Cloud: its secret comes from the Secret, never from the old hook.
        let secret = match hook.secret {
            SecretState::Unset => SecretState::Unset,
            _ => SecretState::Set,
        };
        Some(RemoteHook {
            events,
            secret,
            ..hook.clone()
        })
    }
}

/// A WebhookSet over a Cloud project's repositories, for one project hook.
fn set(
    target: &Target,
    place: &Place,
    workspace: &str,
    project: &str,
    hook: &RemoteHook,
    notes: &mut Vec<String>,
) -> Value {
    let name = manifest::name_for(place, hook);
    let cloud = Target {
        flavor: Flavor::Cloud,
        ..target.clone()
    };
    let listed = [(Place::Workspace(workspace.to_owned()), vec![hook.clone()])];
    let mut webhook = manifest::export(&cloud, &listed);
    notes.append(&mut webhook.notes);
    let mut spec = webhook
        .manifests
        .pop()
        .map(|m| m["spec"].clone())
        .unwrap_or_default();
    let connection = spec["connectionRef"].take();
    if let Some(fields) = spec.as_object_mut() {
        for field in ["connectionRef", "repository", "scope"] {
            fields.remove(field);
        }
    }
    let mut metadata = json!({ "name": name });
    if let Some(ns) = &target.namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "bitbucket.hooks.dev/v1alpha1",
        "kind": "WebhookSet",
        "metadata": metadata,
        "spec": {
            "connectionRef": connection,
            "selector": { "workspace": workspace, "project": project },
            "template": { "spec": spec },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str, url: &str, events: &[&str]) -> RemoteHook {
        RemoteHook {
            id: id.into(),
            title: format!("hook {id}"),
            url: url.into(),
            active: true,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            ..RemoteHook::default()
        }
    }

    fn target() -> Target {
        Target {
            flavor: Flavor::Cloud,
            connection: "cloud".into(),
            cluster_connection: false,
            namespace: None,
            secret_name: "webhook-secret".into(),
        }
    }

    #[test]
    fn maps_parse_and_bad_ones_say_so() {
        let m = Migration::parse(
            Flavor::DataCenter,
            &["plat=acme/PLT".into(), "WEB=acme".into()],
        )
        .expect("maps");
        assert_eq!(m.maps["PLAT"], ("acme".into(), Some("PLT".into())));
        assert_eq!(m.maps["WEB"], ("acme".into(), None));
        for bad in ["PLAT", "PLAT=", "=acme", "PLAT=acme/", "PLAT=a/b/c"] {
            let e = Migration::parse(Flavor::DataCenter, &[bad.into()]).expect_err(bad);
            assert!(e.contains("is not PROJECT=workspace"), "{e}");
        }
        assert!(Migration::parse(Flavor::Cloud, &[]).is_err());
    }

    #[test]
    fn hooks_move_with_cloud_events_and_what_cloud_lacks_is_named() {
        let m = Migration::parse(
            Flavor::DataCenter,
            &["PLAT=acme/PLT".into(), "WEB=acme".into()],
        )
        .expect("maps");
        let repo = |s: &str| Place::Repository(RepoRef::parse(s).expect("repo"));
        let listed = vec![
            (
                repo("PLAT/api"),
                vec![
                    hook(
                        "1",
                        "https://ci/a",
                        &["repo:refs_changed", "pr:opened", "pr:deleted"],
                    ),
                    hook("2", "https://ci/b", &["repo:secret_detected"]),
                ],
            ),
            (
                Place::Project("PLAT".into()),
                vec![hook("3", "https://ci/p", &["pr:merged"])],
            ),
            (
                Place::Project("WEB".into()),
                vec![hook("4", "https://ci/w", &["repo:refs_changed"])],
            ),
            (
                repo("OPS/tools"),
                vec![hook("5", "https://ci/o", &["repo:refs_changed"])],
            ),
        ];
        let out = m.export(&target(), &listed);
        check_moved(&out);
    }

    fn check_moved(out: &Export) {
        let kinds: Vec<(&str, &str)> = out
            .manifests
            .iter()
            .map(|m| {
                (
                    m["kind"].as_str().unwrap_or_default(),
                    m["spec"]["repository"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("Webhook", "acme/api"),
                ("Webhook", "acme"),
                ("WebhookSet", "")
            ]
        );
        let first = &out.manifests[0];
        assert_eq!(
            first["spec"]["events"],
            json!(["pullrequest:created", "repo:push"])
        );
        assert_eq!(out.manifests[1]["spec"]["scope"], "Workspace");
        let set = &out.manifests[2];
        assert_eq!(
            set["spec"]["selector"],
            json!({"workspace": "acme", "project": "PLT"})
        );
        assert_eq!(
            set["spec"]["template"]["spec"]["events"],
            json!(["pullrequest:fulfilled"])
        );
        assert_eq!(set["spec"]["template"]["spec"]["url"], "https://ci/p");
        assert_eq!(set["spec"]["connectionRef"]["name"], "cloud");
        assert!(set["spec"]["template"]["spec"].get("repository").is_none());
        let notes = out.notes.join("\n");
        assert!(
            notes.contains("hook 1") && notes.contains("no event for pr:deleted"),
            "{notes}"
        );
        assert!(
            notes.contains("hook 2") && notes.contains("no manifest"),
            "{notes}"
        );
        assert!(notes.contains("project OPS has no --map"), "{notes}");
        assert!(
            notes.contains("every repository of the workspace"),
            "{notes}"
        );
    }
}
