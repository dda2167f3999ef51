//! Pure checks of a Webhook's spec against its connection's flavor, and its claim.

use crate::api::{Flavor, Scope, Webhook};
use crate::bitbucket::{Place, RepoRef};
use crate::reconcile::claims::Claims;
use crate::reconcile::{Error, Invalid};

/// What a valid spec names.
#[derive(Debug, PartialEq)]
pub struct Valid {
    pub place: Place,
    /// Sorted and unique.
    pub events: Vec<String>,
}

/// Checks the place, the events per flavor and what the flavor can sign.
pub fn spec(w: &Webhook, flavor: Flavor) -> Result<Valid, Invalid> {
    let place = place(w, flavor)?;
    let events = events(flavor, w.spec.settings.events.as_ref())?;
    if flavor == Flavor::PostWebhooks && w.spec.settings.secret_ref.is_some() {
        return Err(Invalid::UnsignedBackend);
    }
    Ok(Valid { place, events })
}

/// Where the hook lives, if the flavor has hooks at that level.
pub fn place(w: &Webhook, flavor: Flavor) -> Result<Place, Invalid> {
    let value = &w.spec.repository;
    let owner = |scope: &'static str| {
        if value.is_empty() || value.contains('/') {
            Err(Invalid::Owner {
                value: value.clone(),
                scope,
            })
        } else {
            Ok(value.clone())
        }
    };
    match (w.spec.scope, flavor) {
        (Scope::Repository, _) => RepoRef::parse(value)
            .map(Place::Repository)
            .ok_or_else(|| Invalid::Repository {
                value: value.clone(),
            }),
        (Scope::Workspace, Flavor::Cloud) => owner("workspace").map(Place::Workspace),
        (Scope::Project, Flavor::DataCenter | Flavor::PostWebhooks) => {
            owner("project").map(Place::Project)
        }
        (Scope::Project, Flavor::Cloud) => Err(Invalid::Scope(
            "Bitbucket Cloud has no project webhooks: use scope Workspace (the workspace's hooks fire for every repository in it) or one Webhook per repository".to_owned(),
        )),
        (Scope::Workspace, _) => Err(Invalid::Scope(format!(
            "the {flavor:?} flavor has no workspaces: use scope Project with the project key"
        ))),
    }
}

/// Events per flavor, sorted and unique; a name of another flavor gets a hint.
pub fn events(flavor: Flavor, events: Option<&Vec<String>>) -> Result<Vec<String>, Invalid> {
    let backend = flavor.events();
    let mut events = match events {
        Some(e) => e.clone(),
        None => bitbucket_events::default_events(backend),
    };
    let problems: Vec<String> = events
        .iter()
        .filter_map(|e| bitbucket_events::check_event(backend, e).message(e, backend))
        .collect();
    if !problems.is_empty() {
        return Err(Invalid::Events { problems });
    }
    events.sort();
    events.dedup();
    Ok(events)
}

/// Two Webhooks claiming one repository and URL through one connection (in any watched
/// namespace): the older one wins, the other is refused.
pub fn conflict(w: &Webhook, claims: &Claims) -> Result<(), Error> {
    match claims.holder(w) {
        Some(holder) => Err(Error::Conflict { holder }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn webhook(repository: &str, events: Option<&[&str]>, signed: bool) -> Webhook {
        let mut spec = serde_json::json!({ "repository": repository });
        if let Some(events) = events {
            spec["events"] = serde_json::json!(events);
        }
        if signed {
            spec["secretRef"] = serde_json::json!({"name": "s"});
        }
        super::super::fixture::webhook(spec, &[])
    }

    #[test]
    fn specs_are_checked_per_flavor() {
        let cloud_push = Some(&["repo:push", "repo:push", "pullrequest:created"][..]);
        // (Webhook, flavor, the events it ends with or a phrase of the error)
        let table = [
            (
                webhook("team/app", cloud_push, true),
                Flavor::Cloud,
                Ok(vec!["pullrequest:created", "repo:push"]),
            ),
            (
                webhook("team", cloud_push, false),
                Flavor::Cloud,
                Err("repository \"team\" is not owner/slug"),
            ),
            (
                webhook("PRJ/app", cloud_push, false),
                Flavor::DataCenter,
                Err("repo:refs_changed"),
            ),
            (
                webhook("PRJ/app", Some(&["repo:refs_changed"][..]), true),
                Flavor::DataCenter,
                Ok(vec!["repo:refs_changed"]),
            ),
            (
                webhook(
                    "PRJ/app",
                    Some(&["ABSTRACT_REPOSITORY_REFS_CHANGED"][..]),
                    true,
                ),
                Flavor::PostWebhooks,
                Err("does not sign deliveries"),
            ),
            (
                webhook("PRJ/app", Some(&["no:such"][..]), false),
                Flavor::DataCenter,
                Err("no:such"),
            ),
        ];
        for (w, flavor, expected) in table {
            let got = spec(&w, flavor);
            match (got, expected) {
                (Ok(valid), Ok(events)) => assert_eq!(valid.events, events),
                (Err(e), Err(text)) => {
                    assert!(e.to_string().contains(text), "{e} should say {text}")
                }
                (got, expected) => panic!("{}: {got:?}, expected {expected:?}", w.spec.repository),
            }
        }
    }

    #[test]
    fn scopes_fit_flavors() {
        let at = |repository: &str, scope: &str| {
            super::super::fixture::webhook(
                serde_json::json!({ "repository": repository, "scope": scope }),
                &[],
            )
        };
        let table = [
            (
                at("acme", "Workspace"),
                Flavor::Cloud,
                Ok(Place::Workspace("acme".into())),
            ),
            (
                at("PRJ", "Project"),
                Flavor::DataCenter,
                Ok(Place::Project("PRJ".into())),
            ),
            (
                at("PRJ", "Project"),
                Flavor::PostWebhooks,
                Ok(Place::Project("PRJ".into())),
            ),
            (
                at("acme", "Project"),
                Flavor::Cloud,
                Err("no project webhooks"),
            ),
            (
                at("PRJ", "Workspace"),
                Flavor::DataCenter,
                Err("no workspaces"),
            ),
            (
                at("PRJ/app", "Project"),
                Flavor::DataCenter,
                Err("the project alone"),
            ),
            (
                at("PRJ", "Repository"),
                Flavor::DataCenter,
                Err("not owner/slug"),
            ),
        ];
        for (w, flavor, expected) in table {
            match (place(&w, flavor), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(e), Err(text)) => {
                    assert!(e.to_string().contains(text), "{e} should say {text}")
                }
                (got, want) => panic!("{}: {got:?}, expected {want:?}", w.spec.repository),
            }
        }
    }
}
