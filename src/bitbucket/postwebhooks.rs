//! The "Post Webhooks for Bitbucket" app: `/rest/webhook/2.0/configurations`.
//!
//! The vendor documents creating, updating and deleting configurations through this API
//! but not the verbs. Assumed (unverified against a live server, see docs): `POST` on the
//! collection, `PUT` and `DELETE` on `/{id}`. [`COLLECTION`] and the three calls below are
//! the only places that assumption lives.

use async_trait::async_trait;
use bitbucket_events::catalogue::POST_WEBHOOKS_EVENTS;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::datacenter::verify_server_credentials;
use super::transport::{Call, Transport};
use super::{
    Deleted, DeliveryStats, Error, HookSpec, Identity, RemoteHook, RepoRef, Result, SecretChange,
    SecretState, TestResult, WebhookBackend, repository_not_found,
};
use crate::api::Flavor;

const COLLECTION: [&str; 4] = ["rest", "webhook", "2.0", "configurations"];

#[derive(Debug)]
pub struct PostWebhooksClient {
    transport: Transport,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Configuration {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    destinations: Vec<Destination>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    ignore_certs: bool,
}

#[derive(Deserialize)]
struct Destination {
    #[serde(default)]
    url: String,
}

impl From<Configuration> for RemoteHook {
    fn from(c: Configuration) -> RemoteHook {
        RemoteHook {
            id: c.id.to_string(),
            title: c.name,
            url: c
                .destinations
                .into_iter()
                .next()
                .map(|d| d.url)
                .unwrap_or_default(),
            active: c.enabled,
            events: c.event_types,
            secret: SecretState::Unset,
            skip_cert_verification: c.ignore_certs,
        }
    }
}

impl PostWebhooksClient {
    pub fn new(transport: Transport) -> PostWebhooksClient {
        PostWebhooksClient { transport }
    }

    fn collection(&self, rest: &[&str]) -> Url {
        let mut segments = COLLECTION.to_vec();
        segments.extend_from_slice(rest);
        self.transport.url(&segments)
    }

    fn body(repo: &RepoRef, spec: &HookSpec) -> Result<Value> {
        if matches!(spec.secret, SecretChange::Set(_)) {
            return Err(Error::Unsupported {
                what: "a signing secret (secretRef)",
                backend: "Post Webhooks for Bitbucket",
            });
        }
        Ok(json!({
            "name": spec.title,
            "enabled": spec.active,
            "destinations": [{ "useUrl": true, "url": spec.url }],
            "projectKey": repo.owner,
            "repositorySlug": repo.slug,
            "eventTypes": spec.events,
            "ignoreCerts": spec.skip_cert_verification,
            "httpMethod": "POST",
        }))
    }
}

#[async_trait]
impl WebhookBackend for PostWebhooksClient {
    fn flavor(&self) -> Flavor {
        Flavor::PostWebhooks
    }

    async fn verify_credentials(&self) -> Result<Identity> {
        verify_server_credentials(&self.transport).await
    }

    async fn list_hooks(&self, repo: &RepoRef) -> Result<Vec<RemoteHook>> {
        let mut url = self.collection(&[]);
        url.query_pairs_mut()
            .append_pair("projectKey", &repo.owner)
            .append_pair("repositorySlug", &repo.slug);
        // A plain JSON array, not a page.
        let configs: Vec<Configuration> = self
            .transport
            .json(Call::get(url))
            .await
            .map_err(|e| repository_not_found(repo, e))?;
        Ok(configs.into_iter().map(RemoteHook::from).collect())
    }

    async fn create_hook(&self, repo: &RepoRef, spec: &HookSpec) -> Result<RemoteHook> {
        let body = Self::body(repo, spec)?;
        let config: Configuration = self
            .transport
            .write(Method::POST, self.collection(&[]), &body)
            .await
            .map_err(|e| repository_not_found(repo, e))?;
        Ok(config.into())
    }

    async fn update_hook(&self, repo: &RepoRef, id: &str, spec: &HookSpec) -> Result<RemoteHook> {
        let body = Self::body(repo, spec)?;
        let config: Configuration = self
            .transport
            .write(Method::PUT, self.collection(&[id]), &body)
            .await?;
        Ok(config.into())
    }

    async fn delete_hook(&self, _repo: &RepoRef, id: &str) -> Result<Deleted> {
        self.transport.delete(self.collection(&[id])).await
    }

    async fn delivery_stats(&self, _repo: &RepoRef, _id: &str) -> Result<Option<DeliveryStats>> {
        Ok(None)
    }

    async fn test_delivery(&self, _repo: &RepoRef, _id: &str) -> Result<TestResult> {
        Err(Error::Unsupported {
            what: "an on-demand test delivery",
            backend: "Post Webhooks for Bitbucket",
        })
    }

    async fn event_catalogue(&self) -> Result<Vec<String>> {
        let url = self
            .transport
            .url(&["rest", "webhook", "2.0", "event-types"]);
        match self.transport.json::<Vec<String>>(Call::get(url)).await {
            Ok(types) => Ok(types),
            // Older app versions may lack the endpoint; the documented list is the fallback.
            Err(Error::NotFound { .. }) => Ok(POST_WEBHOOKS_EVENTS
                .iter()
                .map(|(t, _)| t.to_string())
                .collect()),
            Err(e) => Err(e),
        }
    }

    fn webhooks_page(&self, repo: &RepoRef) -> String {
        let base = self.transport.base().as_str().trim_end_matches('/');
        format!(
            "{base}/plugins/servlet/webhooks/projects/{}/repos/{}",
            repo.owner, repo.slug
        )
    }
}
