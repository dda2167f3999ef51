//! Pure checks of a Webhook's spec against its connection's flavor, and its claim.

use crate::api::{Flavor, Webhook};
use crate::bitbucket::RepoRef;
use crate::reconcile::claims::Claims;
use crate::reconcile::{Error, Invalid};

/// What a valid spec names.
#[derive(Debug, PartialEq)]
pub struct Valid {
    pub repository: RepoRef,
    /// Sorted and unique.
    pub events: Vec<String>,
}

/// Checks the repository, the events per flavor and what the flavor can sign.
pub fn spec(w: &Webhook, flavor: Flavor) -> Result<Valid, Invalid> {
    let repository = RepoRef::parse(&w.spec.repository).ok_or_else(|| Invalid::Repository {
        value: w.spec.repository.clone(),
    })?;
    let events = events(flavor, w.spec.settings.events.as_ref())?;
    if flavor == Flavor::PostWebhooks && w.spec.settings.secret_ref.is_some() {
        return Err(Invalid::UnsignedBackend);
    }
    Ok(Valid { repository, events })
}

/// Events per flavor, sorted and unique; a name of another flavor gets a hint.
fn events(flavor: Flavor, events: Option<&Vec<String>>) -> Result<Vec<String>, Invalid> {
    let backend = backend_of(flavor);
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

pub fn backend_of(flavor: Flavor) -> bitbucket_events::Backend {
    match flavor {
        Flavor::Cloud => bitbucket_events::Backend::Cloud,
        Flavor::DataCenter => bitbucket_events::Backend::DataCenter,
        Flavor::PostWebhooks => bitbucket_events::Backend::PostWebhooks,
    }
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
}
