//! Retrying Webhooks when something changed for their connection, instead of each
//! sleeping out its own backoff or waiting for its resync:
//! - a Webhook whose reconcile found Bitbucket failing waits on its connection and is
//!   retried when the connection's budget hears Bitbucket answer again (paced by that
//!   budget);
//! - a Webhook Bitbucket refused for what the credential is or holds (a missing scope or
//!   permission) is stalled on its connection and retried when the connection's client is
//!   rebuilt (its Secret or spec changed), through the same path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::broadcast;

use super::Registry;
use crate::identity::{BudgetKey, ConnectionId};

/// A Webhook: namespace and name.
pub type WebhookName = (String, String);

/// Webhooks kept per connection until something retries them.
#[derive(Default)]
pub struct Retries {
    /// Whose last reconcile found its connection's Bitbucket failing.
    waiting: Mutex<HashMap<ConnectionId, HashSet<WebhookName>>>,
    /// Whom Bitbucket refused for the credential.
    stalled: Mutex<HashMap<ConnectionId, HashSet<WebhookName>>>,
}

type Parked = Mutex<HashMap<ConnectionId, HashSet<WebhookName>>>;

fn lock(map: &Parked) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, HashSet<WebhookName>>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl Retries {
    pub fn wait(&self, connection: &ConnectionId, webhook: WebhookName) {
        lock(&self.waiting)
            .entry(connection.clone())
            .or_default()
            .insert(webhook);
    }

    pub fn stall(&self, connection: &ConnectionId, webhook: WebhookName) {
        lock(&self.stalled)
            .entry(connection.clone())
            .or_default()
            .insert(webhook);
    }

    /// The connection's credential changed: its stalled Webhooks wait for the next
    /// retry (the caller announces it). False when none were stalled.
    pub fn release_stalled(&self, connection: &ConnectionId) -> bool {
        let Some(stalled) = lock(&self.stalled).remove(connection) else {
            return false;
        };
        lock(&self.waiting)
            .entry(connection.clone())
            .or_default()
            .extend(stalled);
        true
    }

    /// A Webhook no longer waits (it succeeded, or is gone).
    pub fn done(&self, webhook: &WebhookName) {
        for map in [&self.waiting, &self.stalled] {
            let mut map = lock(map);
            for set in map.values_mut() {
                set.remove(webhook);
            }
            map.retain(|_, set| !set.is_empty());
        }
    }

    /// The Webhooks waiting on `connections` in a namespace `ours` accepts, no longer
    /// waiting once taken.
    pub fn take(
        &self,
        connections: &[ConnectionId],
        ours: impl Fn(&str) -> bool,
    ) -> Vec<WebhookName> {
        let mut waiting = lock(&self.waiting);
        let mut taken = Vec::new();
        for connection in connections {
            if let Some(set) = waiting.get_mut(connection) {
                set.retain(|webhook| {
                    let mine = ours(&webhook.0);
                    if mine {
                        taken.push(webhook.clone());
                    }
                    !mine
                });
            }
        }
        waiting.retain(|_, set| !set.is_empty());
        taken.sort();
        taken
    }
}

/// The budget keys a broadcast announces, as a stream (a lagging receiver skips what it
/// missed: the next announcement serves).
pub fn announced(
    rx: broadcast::Receiver<BudgetKey>,
) -> impl Stream<Item = BudgetKey> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(key) => return Some((key, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The Webhooks of `namespace` (None: all) to retry, as their connection's Bitbucket
/// answers again or its credential changes: what the Webhook controller reconciles on.
pub fn due(
    registry: Arc<Registry>,
    namespace: Option<String>,
) -> impl Stream<Item = WebhookName> + Send + 'static {
    use futures::StreamExt;
    announced(registry.budgets.answering()).flat_map(move |budget| {
        let ours = |ns: &str| namespace.as_deref().is_none_or(|w| w == ns);
        let connections = registry.budgets.connections_on(&budget);
        futures::stream::iter(registry.retries.take(&connections, ours))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnectionKind;

    fn id(name: &str) -> ConnectionId {
        ConnectionId::new(ConnectionKind::ClusterBitbucketConnection, None, name)
    }

    fn hook(ns: &str, name: &str) -> WebhookName {
        (ns.to_owned(), name.to_owned())
    }

    #[test]
    fn stalled_webhooks_wait_once_released_and_are_taken_by_their_namespace() {
        let retries = Retries::default();
        retries.stall(&id("c"), hook("a", "ci"));
        retries.stall(&id("c"), hook("b", "ci"));
        retries.wait(&id("other"), hook("a", "chat"));
        assert!(
            retries.take(&[id("c")], |_| true).is_empty(),
            "stalled, not waiting"
        );
        assert!(retries.release_stalled(&id("c")));
        assert!(!retries.release_stalled(&id("c")), "released once");
        assert_eq!(retries.take(&[id("c")], |ns| ns == "a"), [hook("a", "ci")]);
        retries.done(&hook("b", "ci"));
        assert!(
            retries
                .take(&[id("c"), id("other")], |ns| ns == "b")
                .is_empty()
        );
        assert_eq!(
            retries.take(&[id("c"), id("other")], |_| true),
            [hook("a", "chat")]
        );
    }
}
