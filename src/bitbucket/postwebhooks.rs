//! The "Post Webhooks for Bitbucket" app (Move Work Forward), in both of its APIs:
//!
//! - v2 (app 3.5.5 and later): `/rest/webhook/2.0/configurations`, the level implied by
//!   `projectKey` / `repositorySlug` in the body, its event catalogue at
//!   `/rest/webhook/2.0/configurations/event-types`. The vendor documents creating,
//!   updating and deleting through it but not the verbs; assumed (as Jenkins' v2 manager
//!   does, unverified against a live server): `POST` on the collection, `PUT` and `DELETE`
//!   on `/{id}`.
//! - v1 (before 3.5.5): `/rest/webhook/1.0/projects/{KEY}/repos/{slug}/configurations`,
//!   a `title`, one boolean per trigger, no certificate setting (the vendor's help pages
//!   and Jenkins' v1 manager).
//!
//! Which one a server has is detected once per client: the v2 catalogue answers, or v1 is
//! used. An update starts from the configuration as read, so filters, users and
//! authentication set in the app's own pages survive.

use async_trait::async_trait;
use bitbucket_events::catalogue::{POST_WEBHOOKS_EVENTS, POST_WEBHOOKS_V1_TRIGGERS};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::datacenter::{
    list_server_projects, list_server_repositories, server_webhooks_page, verify_server_credentials,
};
use super::transport::{Call, Transport};
use super::{
    AsRead, Deleted, Error, HookSpec, Identity, Place, RemoteHook, RepoRef, Result, SecretChange,
    TestResult, WebhookBackend, place_not_found,
};
use crate::api::Flavor;

const V2: [&str; 4] = ["rest", "webhook", "2.0", "configurations"];

/// v1's trigger booleans and the v2 event type each stands for.
const V1_TRIGGERS: &[(&str, &str)] = POST_WEBHOOKS_V1_TRIGGERS;

/// The app's API on this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppApi {
    V2,
    /// App older than 3.5.5: per-repository configurations.
    V1,
}

#[derive(Debug)]
pub struct PostWebhooksClient {
    transport: Transport,
    api: OnceCell<AppApi>,
}

fn text(o: &Map<String, Value>, key: &str) -> String {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn flag(o: &Map<String, Value>, key: &str) -> bool {
    o.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn id_of(o: &Map<String, Value>) -> Result<String> {
    match o.get("id") {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Error::Unexpected {
            message: "a Post Webhooks configuration without an id".to_owned(),
        }),
    }
}

/// A v2 configuration as read.
fn from_v2(o: Map<String, Value>) -> Result<RemoteHook> {
    let url = o
        .get("destinations")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(|d| d.get("url"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let events = o
        .get("eventTypes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(RemoteHook {
        id: id_of(&o)?,
        title: text(&o, "name"),
        url,
        active: flag(&o, "enabled"),
        events,
        skip_cert_verification: flag(&o, "ignoreCerts"),
        read: AsRead(o),
        ..RemoteHook::default()
    })
}

/// The event type names in an `/event-types` answer, whose shape the vendor does not
/// show: a list of names or of objects naming the type, or an object holding such a list
/// or keyed by the types.
fn event_type_names(answer: &Value) -> Vec<String> {
    let named = |t: &Value| match t {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => ["id", "key", "name", "eventType"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str))
            .map(str::to_owned),
        _ => None,
    };
    match answer {
        Value::Array(items) => items.iter().filter_map(named).collect(),
        Value::Object(o) => match o.values().find_map(Value::as_array) {
            Some(items) => items.iter().filter_map(named).collect(),
            None => o.keys().cloned().collect(),
        },
        _ => Vec::new(),
    }
}

/// A v1 configuration as read: triggers become v2 event types.
fn from_v1(o: Map<String, Value>) -> Result<RemoteHook> {
    let events = V1_TRIGGERS
        .iter()
        .filter(|(trigger, _)| flag(&o, trigger))
        .map(|(_, event)| (*event).to_owned())
        .collect();
    Ok(RemoteHook {
        id: id_of(&o)?,
        title: text(&o, "title"),
        url: text(&o, "url"),
        active: flag(&o, "enabled"),
        events,
        read: AsRead(o),
        ..RemoteHook::default()
    })
}

fn unsupported_secret(spec: &HookSpec) -> Result<()> {
    if matches!(spec.secret, SecretChange::Set(_)) {
        return Err(Error::Unsupported {
            what: "a signing secret (secretRef)",
            backend: "Post Webhooks for Bitbucket",
        });
    }
    Ok(())
}

/// The v2 body: what was read, with the fields the operator manages on top.
fn v2_body(place: &Place, spec: &HookSpec, current: Option<&RemoteHook>) -> Result<Value> {
    unsupported_secret(spec)?;
    let mut body = current.map(|c| c.read.0.clone()).unwrap_or_default();
    let mut destinations = body
        .get("destinations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match destinations.first_mut().and_then(Value::as_object_mut) {
        Some(first) => {
            first.insert("url".into(), json!(spec.url));
            first.insert("useUrl".into(), json!(true));
        }
        None => destinations = vec![json!({ "useUrl": true, "url": spec.url })],
    }
    for (key, value) in [
        ("name", json!(spec.title)),
        ("enabled", json!(spec.active)),
        ("destinations", Value::Array(destinations)),
        ("projectKey", json!(place.owner())),
        ("eventTypes", json!(spec.events)),
        ("ignoreCerts", json!(spec.skip_cert_verification)),
    ] {
        body.insert(key.into(), value);
    }
    // The level is implied by the body: a project configuration has no repositorySlug.
    match place {
        Place::Repository(r) => body.insert("repositorySlug".into(), json!(r.slug)),
        _ => body.remove("repositorySlug"),
    };
    body.entry("httpMethod").or_insert(json!("POST"));
    Ok(Value::Object(body))
}

/// The v1 body: what was read, title, url, enabled and every trigger set from the events.
fn v1_body(spec: &HookSpec, current: Option<&RemoteHook>) -> Result<Value> {
    unsupported_secret(spec)?;
    if spec.skip_cert_verification {
        return Err(Error::Unsupported {
            what: "skipCertVerification",
            backend: "the Post Webhooks app's v1 API (app older than 3.5.5)",
        });
    }
    if let Some(unknown) = spec
        .events
        .iter()
        .find(|e| !V1_TRIGGERS.iter().any(|(_, event)| event == e))
    {
        return Err(Error::Invalid {
            message: format!(
                "event {unknown} has no trigger in the Post Webhooks app's v1 API (app older than 3.5.5); available: {}",
                V1_TRIGGERS
                    .iter()
                    .map(|(_, e)| *e)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut body = current.map(|c| c.read.0.clone()).unwrap_or_default();
    body.insert("title".into(), json!(spec.title));
    body.insert("url".into(), json!(spec.url));
    body.insert("enabled".into(), json!(spec.active));
    for (trigger, event) in V1_TRIGGERS {
        body.insert(
            (*trigger).into(),
            json!(spec.events.iter().any(|e| e == event)),
        );
    }
    Ok(Value::Object(body))
}

impl PostWebhooksClient {
    pub fn new(transport: Transport) -> PostWebhooksClient {
        PostWebhooksClient {
            transport,
            api: OnceCell::new(),
        }
    }

    fn v2(&self, rest: &[&str]) -> Url {
        let mut segments = V2.to_vec();
        segments.extend_from_slice(rest);
        self.transport.url(&segments)
    }

    /// v1 has repository configurations only.
    fn v1(&self, place: &Place, rest: &[&str]) -> Result<Url> {
        let Place::Repository(repo) = place else {
            return Err(Error::Invalid {
                message: format!(
                    "the Post Webhooks app on this server is older than 3.5.5: its v1 API has repository configurations only, not one on a {}",
                    place.describe()
                ),
            });
        };
        let mut segments = vec![
            "rest",
            "webhook",
            "1.0",
            "projects",
            &repo.owner,
            "repos",
            &repo.slug,
            "configurations",
        ];
        segments.extend_from_slice(rest);
        Ok(self.transport.url(&segments))
    }

    /// The v2 event catalogue, or None where the server has no v2 API.
    async fn v2_catalogue(&self) -> Result<Option<Vec<String>>> {
        match self
            .transport
            .json::<Value>(Call::get(self.v2(&["event-types"])))
            .await
        {
            Ok(answer) => Ok(Some(event_type_names(&answer))),
            Err(Error::NotFound { .. }) => Ok(None),
            // The app answered, refusing a non-admin: its v2 API is there (a v1-only app
            // has no such path: 404). The built-in list stands in for the catalogue.
            Err(Error::Unauthorized { .. } | Error::Forbidden { .. }) => Ok(Some(
                POST_WEBHOOKS_EVENTS
                    .iter()
                    .map(|(e, _)| (*e).to_owned())
                    .collect(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Which API the server's app has, asked once.
    pub async fn app_api(&self) -> Result<AppApi> {
        self.api
            .get_or_try_init(|| async {
                Ok(match self.v2_catalogue().await? {
                    Some(_) => AppApi::V2,
                    None => AppApi::V1,
                })
            })
            .await
            .copied()
    }

    fn v1_not_found(place: &Place, e: Error) -> Error {
        match e {
            Error::NotFound { message } => Error::NotFound {
                message: format!(
                    "{}, or the Post Webhooks app (neither its v2 nor its v1 API answered): {message}",
                    place.describe()
                ),
            },
            other => other,
        }
    }
}

#[async_trait]
impl WebhookBackend for PostWebhooksClient {
    fn flavor(&self) -> Flavor {
        Flavor::PostWebhooks
    }

    fn identity_call(&self) -> &'static str {
        "GET /rest/api/latest/application-properties"
    }

    async fn verify_credentials(&self) -> Result<Identity> {
        let identity = verify_server_credentials(&self.transport).await?;
        // Asked here so the connection says which API it found before any Webhook needs it.
        let detail = match self.app_api().await? {
            AppApi::V2 => "the Post Webhooks app serves its v2 API",
            AppApi::V1 => {
                "the Post Webhooks app is older than 3.5.5: its per-repository v1 API is used"
            }
        };
        Ok(Identity {
            detail: Some(detail.to_owned()),
            ..identity
        })
    }

    async fn list_hooks(&self, place: &Place) -> Result<Vec<RemoteHook>> {
        if let Place::Workspace(_) = place {
            return Err(place.unsupported(Flavor::PostWebhooks));
        }
        // Both APIs answer a plain JSON array, not a page.
        match self.app_api().await? {
            AppApi::V2 => {
                let mut url = self.v2(&[]);
                {
                    let mut query = url.query_pairs_mut();
                    query.append_pair("projectKey", place.owner());
                    if let Place::Repository(r) = place {
                        query.append_pair("repositorySlug", &r.slug);
                    }
                }
                let configs: Vec<Map<String, Value>> = self
                    .transport
                    .json(Call::get(url))
                    .await
                    .map_err(|e| place_not_found(place, e))?;
                configs
                    .into_iter()
                    // Whether `?projectKey=` alone also answers the project's repository
                    // configurations is not documented: those are not the project's own.
                    // And a repository's listing may carry its project's configurations
                    // (the vendor's example shows one): not the repository's to manage.
                    .filter(|c| {
                        let slug = c
                            .get("repositorySlug")
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty());
                        match place {
                            Place::Repository(r) => {
                                slug.is_some_and(|s| s.eq_ignore_ascii_case(&r.slug))
                            }
                            _ => slug.is_none(),
                        }
                    })
                    .map(from_v2)
                    .collect()
            }
            AppApi::V1 => {
                let configs: Vec<Map<String, Value>> = self
                    .transport
                    .json(Call::get(self.v1(place, &[])?))
                    .await
                    .map_err(|e| Self::v1_not_found(place, e))?;
                configs.into_iter().map(from_v1).collect()
            }
        }
    }

    async fn create_hook(&self, place: &Place, spec: &HookSpec) -> Result<RemoteHook> {
        if let Place::Workspace(_) = place {
            return Err(place.unsupported(Flavor::PostWebhooks));
        }
        match self.app_api().await? {
            AppApi::V2 => {
                let body = v2_body(place, spec, None)?;
                let config = self
                    .transport
                    .write(Method::POST, self.v2(&[]), &body)
                    .await
                    .map_err(|e| place_not_found(place, e))?;
                from_v2(config)
            }
            AppApi::V1 => {
                let body = v1_body(spec, None)?;
                let config = self
                    .transport
                    .write(Method::POST, self.v1(place, &[])?, &body)
                    .await
                    .map_err(|e| Self::v1_not_found(place, e))?;
                from_v1(config)
            }
        }
    }

    async fn update_hook(
        &self,
        place: &Place,
        current: &RemoteHook,
        spec: &HookSpec,
    ) -> Result<RemoteHook> {
        match self.app_api().await? {
            AppApi::V2 => {
                let body = v2_body(place, spec, Some(current))?;
                let url = self.v2(&[&current.id]);
                from_v2(self.transport.write(Method::PUT, url, &body).await?)
            }
            AppApi::V1 => {
                let body = v1_body(spec, Some(current))?;
                let url = self.v1(place, &[&current.id])?;
                from_v1(self.transport.write(Method::PUT, url, &body).await?)
            }
        }
    }

    async fn delete_hook(&self, place: &Place, id: &str) -> Result<Deleted> {
        match self.app_api().await? {
            AppApi::V2 => self.transport.delete(self.v2(&[id])).await,
            AppApi::V1 => self.transport.delete(self.v1(place, &[id])?).await,
        }
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
            backend: "Post Webhooks for Bitbucket",
        })
    }

    async fn event_catalogue(&self) -> Result<Vec<String>> {
        Ok(match self.v2_catalogue().await? {
            Some(types) => types,
            None => V1_TRIGGERS.iter().map(|(_, e)| (*e).to_owned()).collect(),
        })
    }

    fn webhooks_page(&self, place: &Place) -> String {
        server_webhooks_page(&self.transport, place)
    }

    async fn list_repositories(&self, owner: &str, _project: Option<&str>) -> Result<Vec<RepoRef>> {
        list_server_repositories(&self.transport, owner).await
    }

    async fn list_projects(&self) -> Result<Vec<String>> {
        list_server_projects(&self.transport).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: &[&str]) -> HookSpec {
        HookSpec {
            title: "t".into(),
            url: "https://ci.example.com/hook".into(),
            active: true,
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: SecretChange::Keep,
            skip_cert_verification: false,
        }
    }

    #[test]
    fn a_v2_update_keeps_what_the_app_ui_set() {
        let Value::Object(read) = json!({
            "id": 4, "name": "old", "enabled": true, "eventTypes": ["PULL_REQUEST_OPENED"],
            "destinations": [{ "useUrl": true, "url": "https://old", "headers": "X-A: 1" }],
            "branchesToIgnore": "wip/*", "users": ["alice"], "enableAuthentication": true,
        }) else {
            unreachable!()
        };
        let current = from_v2(read).expect("config");
        let repo = Place::Repository(RepoRef::parse("PRJ/api").expect("repo"));
        let body = v2_body(&repo, &spec(&["TAG_CREATED"]), Some(&current)).expect("body");
        assert_eq!(body["branchesToIgnore"], json!("wip/*"));
        assert_eq!(body["users"], json!(["alice"]));
        assert_eq!(body["enableAuthentication"], json!(true));
        assert_eq!(body["destinations"][0]["headers"], json!("X-A: 1"));
        assert_eq!(
            body["destinations"][0]["url"],
            json!("https://ci.example.com/hook")
        );
        assert_eq!(body["eventTypes"], json!(["TAG_CREATED"]));
    }

    #[test]
    fn v1_triggers_round_trip_and_unknown_events_are_named() {
        let body = v1_body(
            &spec(&["ABSTRACT_REPOSITORY_REFS_CHANGED", "BUILD_STATUS_SET"]),
            None,
        )
        .expect("body");
        assert_eq!(body["repoPush"], json!(true));
        assert_eq!(body["buildStatus"], json!(true));
        assert_eq!(body["prCreated"], json!(false));
        let Value::Object(mut read) = body else {
            unreachable!()
        };
        read.insert("id".into(), json!(9));
        let hook = from_v1(read).expect("hook");
        assert_eq!(
            hook.events,
            ["ABSTRACT_REPOSITORY_REFS_CHANGED", "BUILD_STATUS_SET"]
        );
        let e = v1_body(&spec(&["PULL_REQUEST_COMMENT_ACTIVITY"]), None).expect_err("no trigger");
        assert!(
            e.to_string().contains("PULL_REQUEST_COMMENT_ACTIVITY"),
            "{e}"
        );
    }
}
