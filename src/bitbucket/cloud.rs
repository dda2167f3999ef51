//! Bitbucket Cloud REST 2.0: `/repositories/{workspace}/{repo_slug}/hooks`.

use async_trait::async_trait;
use reqwest::{Method, Url};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{Call, Transport};
use super::{
    Deleted, Error, HookSpec, Identity, Place, RemoteHook, RepoRef, Result, SecretChange,
    SecretState, TestResult, WebhookBackend, null_default, place_not_found,
};
use crate::api::Flavor;

#[derive(Debug)]
pub struct CloudClient {
    transport: Transport,
}

#[derive(Deserialize)]
struct Page<T> {
    values: Vec<T>,
    next: Option<String>,
}

/// A repository in a listing: the spec's `full_name` ("workspace/slug") names it.
#[derive(Deserialize)]
struct ListedRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct Subscription {
    uuid: String,
    #[serde(deserialize_with = "null_default")]
    url: String,
    #[serde(default, deserialize_with = "null_default")]
    description: String,
    #[serde(default, deserialize_with = "null_default")]
    active: bool,
    #[serde(default, deserialize_with = "null_default")]
    events: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    secret_set: bool,
    #[serde(default, deserialize_with = "null_default")]
    skip_cert_verification: bool,
}

impl From<Subscription> for RemoteHook {
    fn from(s: Subscription) -> RemoteHook {
        RemoteHook {
            id: s.uuid,
            title: s.description,
            url: s.url,
            active: s.active,
            events: s.events,
            secret: if s.secret_set {
                SecretState::Set
            } else {
                SecretState::Unset
            },
            skip_cert_verification: s.skip_cert_verification,
            ..RemoteHook::default()
        }
    }
}

#[derive(Deserialize)]
struct HookEvent {
    event: String,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
}

impl CloudClient {
    pub fn new(transport: Transport) -> CloudClient {
        CloudClient { transport }
    }

    /// A repository's or workspace's hooks (Cloud has no project hooks), or hook `id`.
    fn hooks_url(&self, place: &Place, id: Option<&str>) -> Result<Url> {
        let mut segments = match place {
            Place::Repository(r) => vec!["repositories", r.owner.as_str(), r.slug.as_str()],
            Place::Workspace(w) => vec!["workspaces", w.as_str()],
            Place::Project(_) => return Err(place.unsupported(Flavor::Cloud)),
        };
        segments.push("hooks");
        segments.extend(id);
        Ok(self.transport.url(&segments))
    }

    /// Follows `next` links (same server only, each page once, at most `MAX_PAGES`)
    /// until the last page: a server whose links go round would loop forever.
    async fn all_pages<T: serde::de::DeserializeOwned>(&self, first: Url) -> Result<Vec<T>> {
        let mut values = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut url = Some(first);
        while let Some(current) = url.take() {
            if !seen.insert(current.clone()) || seen.len() > super::MAX_PAGES {
                return Err(Error::Unexpected {
                    message: format!(
                        "the listing's next links go round or past {} pages (at {})",
                        super::MAX_PAGES,
                        current.path()
                    ),
                });
            }
            let page: Page<T> = self.transport.json(Call::get(current)).await?;
            values.extend(page.values);
            if let Some(next) = page.next {
                let next = Url::parse(&next).map_err(|e| Error::Unexpected {
                    message: format!("bad next link: {e}"),
                })?;
                if !self.transport.same_origin(&next) {
                    return Err(Error::Unexpected {
                        message: format!(
                            "the next page link points at another server ({})",
                            next.origin().ascii_serialization()
                        ),
                    });
                }
                url = Some(next);
            }
        }
        Ok(values)
    }

    fn body(spec: &HookSpec, creating: bool) -> Value {
        let mut body = json!({
            "description": spec.title,
            "url": spec.url,
            "active": spec.active,
            "events": spec.events,
            "skip_cert_verification": spec.skip_cert_verification,
        });
        match &spec.secret {
            SecretChange::Set(secret) => body["secret"] = json!(secret.expose_secret()),
            // Omitting the secret keeps it; null removes it.
            SecretChange::Remove if !creating => body["secret"] = Value::Null,
            SecretChange::Remove | SecretChange::Keep => {}
        }
        body
    }
}

#[async_trait]
impl WebhookBackend for CloudClient {
    fn flavor(&self) -> Flavor {
        Flavor::Cloud
    }

    async fn verify_credentials(&self) -> Result<Identity> {
        // `/user` needs the `account` scope (API tokens: `read:user:bitbucket`), which
        // repository and project access tokens cannot hold, and Cloud may refuse them
        // with a plain 401 as if the token were invalid: a refusal here is a hint, which
        // the connection settles by listing the hooks of a repository it serves.
        let user: User = self
            .transport
            .json(Call::get(self.transport.url(&["user"])))
            .await?;
        Ok(Identity {
            user: user.username.or(user.display_name).or(user.uuid),
            detail: None,
        })
    }

    fn identity_is_conclusive(&self) -> bool {
        false
    }

    fn identity_call(&self) -> &'static str {
        "GET /2.0/user"
    }

    async fn list_hooks(&self, place: &Place) -> Result<Vec<RemoteHook>> {
        let mut url = self.hooks_url(place, None)?;
        url.query_pairs_mut().append_pair("pagelen", "100");
        let subs: Vec<Subscription> = self
            .all_pages(url)
            .await
            .map_err(|e| place_not_found(place, e))?;
        Ok(subs.into_iter().map(RemoteHook::from).collect())
    }

    async fn create_hook(&self, place: &Place, spec: &HookSpec) -> Result<RemoteHook> {
        let body = Self::body(spec, true);
        let sub: Subscription = self
            .transport
            .write(Method::POST, self.hooks_url(place, None)?, &body)
            .await
            .map_err(|e| place_not_found(place, e))?;
        Ok(sub.into())
    }

    async fn update_hook(
        &self,
        place: &Place,
        current: &RemoteHook,
        spec: &HookSpec,
    ) -> Result<RemoteHook> {
        // Cloud's PUT changes the fields sent (an omitted secret is kept).
        let body = Self::body(spec, false);
        let sub: Subscription = self
            .transport
            .write(
                Method::PUT,
                self.hooks_url(place, Some(&current.id))?,
                &body,
            )
            .await?;
        Ok(sub.into())
    }

    async fn delete_hook(&self, place: &Place, id: &str) -> Result<Deleted> {
        self.transport
            .delete(self.hooks_url(place, Some(id))?)
            .await
    }

    async fn test_delivery(
        &self,
        _place: &Place,
        _id: &str,
        _url: &str,
        _skip: bool,
    ) -> Result<TestResult> {
        Err(Error::Unsupported {
            what: "an on-demand test delivery",
            backend: "Bitbucket Cloud",
        })
    }

    async fn event_catalogue(&self) -> Result<Vec<String>> {
        let mut url = self.transport.url(&["hook_events", "repository"]);
        url.query_pairs_mut().append_pair("pagelen", "100");
        let events: Vec<HookEvent> = self.all_pages(url).await?;
        Ok(events.into_iter().map(|e| e.event).collect())
    }

    fn hook_api_url(&self, place: &Place, id: &str) -> Option<String> {
        self.hooks_url(place, Some(id)).ok().map(String::from)
    }

    async fn list_repositories(&self, owner: &str, project: Option<&str>) -> Result<Vec<RepoRef>> {
        let mut url = self.transport.url(&["repositories", owner]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("pagelen", "100");
            if let Some(key) = project {
                query.append_pair("q", &format!("project.key=\"{key}\""));
            }
        }
        let listed: Vec<ListedRepository> = self.all_pages(url).await.map_err(|e| match e {
            Error::NotFound { message } => Error::NotFound {
                message: format!("workspace {owner}: {message}"),
            },
            other => other,
        })?;
        listed
            .into_iter()
            .map(|r| {
                RepoRef::parse(&r.full_name).ok_or_else(|| Error::Unexpected {
                    message: format!(
                        "a listed repository has no workspace/slug name: {:?}",
                        r.full_name
                    ),
                })
            })
            .collect()
    }

    fn webhooks_page(&self, place: &Place) -> String {
        let base = self.transport.base();
        let site = match base.host_str() {
            Some("api.bitbucket.org") => "https://bitbucket.org".to_owned(),
            _ => base.origin().ascii_serialization(),
        };
        match place {
            Place::Repository(r) => format!("{site}/{}/{}/admin/webhooks", r.owner, r.slug),
            other => format!("{site}/{}/workspace/settings/webhooks", other.owner()),
        }
    }
}
