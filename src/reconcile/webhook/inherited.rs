//! A repository hook whose URL a project (Data Center) or workspace (Cloud) hook also
//! has: Bitbucket delivers each event of the repository to that URL twice.
//!
//! The owner's hooks are listed at most once per listing TTL for all its repositories'
//! Webhooks (the inherited copy of its listing; the operator's own writes at the owner's level are
//! applied to it as to every listing). A credential that may not read them
//! (a repository access token, REPO_ADMIN only) learns nothing and warns of nothing, and
//! is not asked again until its client is rebuilt or `cache::REFUSAL_MEMORY` has passed.

use super::list_key;
use super::observe::Target;
use crate::api::Flavor;
use crate::bitbucket::{Error, Place, RemoteHook};
use crate::reconcile::Context;

/// The place above a repository whose hooks it inherits, if the flavor has one.
fn owner_of(place: &Place, flavor: Flavor) -> Option<Place> {
    let Place::Repository(repo) = place else {
        return None;
    };
    Some(match flavor {
        Flavor::Cloud => Place::Workspace(repo.owner.clone()),
        Flavor::DataCenter | Flavor::PostWebhooks => Place::Project(repo.owner.clone()),
    })
}

/// The sentence for a duplicate among the owner's `hooks`, if one has `url`.
pub fn describe(owner: &Place, hooks: &[RemoteHook], url: &str) -> Option<String> {
    let hook = hooks.iter().find(|h| h.url == url)?;
    let title = if hook.title.is_empty() {
        String::new()
    } else {
        format!(" ({:?})", hook.title)
    };
    Some(format!(
        "{owner} has hook {}{title} with the same URL, inherited by this repository: Bitbucket delivers each event to the URL twice. Remove one of them",
        hook.id
    ))
}

/// The warning for the Webhook of `target` delivering to `url`, if its repository
/// inherits a hook with the same URL.
pub async fn duplicate(target: &Target<'_>, url: &str, ctx: &Context) -> Option<String> {
    let owner = owner_of(target.place, target.view.spec.flavor)?;
    let key = list_key(target.view, &owner);
    let backend = target.backend.clone();
    let credential_since = ctx.connections.rebuilt_at(&target.view.id);
    let listed = ctx
        .lists
        .get_inherited(&key, credential_since, || async {
            match backend.list_hooks(&owner).await {
                // Not the credential's to read (or no such level on this server): nothing
                // is known, and asking again before the credential changes says the same.
                Err(
                    Error::Unauthorized { .. }
                    | Error::Forbidden { .. }
                    | Error::MissingScope { .. }
                    | Error::NotFound { .. }
                    | Error::Invalid { .. }
                    | Error::Unsupported { .. },
                ) => Ok(None),
                other => other.map(Some),
            }
        })
        .await;
    match listed {
        Ok((hooks, _)) => describe(&owner, &hooks, url),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the inherited hooks now");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_url_hook_above_the_repository_is_named() {
        let repo = Place::Repository(crate::bitbucket::RepoRef::parse("PRJ/app").expect("repo"));
        let owner = owner_of(&repo, Flavor::DataCenter).expect("a project");
        assert_eq!(owner, Place::Project("PRJ".into()));
        assert_eq!(
            owner_of(&repo, Flavor::Cloud),
            Some(Place::Workspace("PRJ".into()))
        );
        assert_eq!(owner_of(&owner, Flavor::DataCenter), None);
        let hooks = [RemoteHook {
            id: "7".into(),
            title: "CI".into(),
            url: "https://ci.example.com/hook".into(),
            ..RemoteHook::default()
        }];
        let said = describe(&owner, &hooks, "https://ci.example.com/hook").expect("warned");
        assert!(
            said.starts_with("project PRJ has hook 7 (\"CI\")"),
            "{said}"
        );
        assert_eq!(
            describe(&owner, &hooks, "https://ci.example.com/other"),
            None
        );
    }
}
