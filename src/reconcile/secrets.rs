//! Secrets by value, read from the API server only when they changed.
//!
//! Every reconcile needs its connection's credential (and a Webhook its signing secret).
//! Reading them each time cost one API request per reconcile, more than anything else at
//! thousands of Webhooks. The operator already watches Secrets' metadata (to react to a
//! rotation); a copy read earlier is served while that watch shows the same
//! resourceVersion, and read again the moment it shows another. A Secret the watch has
//! not seen (another namespace, not yet listed) is always read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

/// The Secrets' metadata, as the watch last saw it.
pub type Versions = Store<PartialObjectMeta<Secret>>;

/// Copies of the Secrets read, by namespace/name.
#[derive(Default)]
pub struct SecretCache {
    copies: Mutex<HashMap<String, Arc<Secret>>>,
}

impl SecretCache {
    /// The Secret (None: it does not exist).
    pub async fn get(
        &self,
        client: &kube::Client,
        versions: Option<&Versions>,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        let key = format!("{namespace}/{name}");
        let watched = versions
            .and_then(|v| v.get(&ObjectRef::new(name).within(namespace)))
            .and_then(|m| m.resource_version());
        if let Some(version) = &watched
            && let Some(copy) = self.lock().get(&key)
            && copy.resource_version().as_ref() == Some(version)
        {
            return Ok(Some(copy.clone()));
        }
        let fresh = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(Arc::new);
        match &fresh {
            // Kept only where the watch can say when it goes stale.
            Some(secret) if watched.is_some() => {
                self.lock().insert(key, secret.clone());
            }
            _ => {
                self.lock().remove(&key);
            }
        }
        Ok(fresh)
    }

    /// Drops the copy of a deleted Secret.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&format!("{namespace}/{name}"));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Secret>>> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a reconcile reads Secrets through: the API server, the watch of their versions
/// (None: always read), and the process's copies.
#[derive(Clone)]
pub struct SecretReader {
    pub client: kube::Client,
    pub versions: Option<Versions>,
    pub copies: Arc<SecretCache>,
}

impl SecretReader {
    /// A Secret by value (None: it does not exist), read again only when it changed.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        self.copies
            .get(&self.client, self.versions.as_ref(), namespace, name)
            .await
    }

    /// One key of a Secret as text, with the Secret's version ("uid/resourceVersion").
    pub async fn value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<(String, String), super::Error> {
        let secret =
            self.get(namespace, name)
                .await?
                .ok_or_else(|| super::Error::SecretNotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })?;
        let version = format!(
            "{}/{}",
            secret.uid().unwrap_or_default(),
            secret.resource_version().unwrap_or_default()
        );
        let problem = |make: fn(String, String, String) -> super::SecretProblem| {
            super::Error::from(make(namespace.to_owned(), name.to_owned(), key.to_owned()))
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| {
                problem(|namespace, name, key| super::SecretProblem::MissingKey {
                    namespace,
                    name,
                    key,
                })
            })?;
        let text = String::from_utf8(value.0.clone()).map_err(|_| {
            problem(|namespace, name, key| super::SecretProblem::NotText {
                namespace,
                name,
                key,
            })
        })?;
        Ok((text, version))
    }
}
