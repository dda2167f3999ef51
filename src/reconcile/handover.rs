//! A hook passing between Webhook objects: a Webhook moved to another namespace (with its
//! own connection to the same Bitbucket) is applied there while the old one is deleted,
//! in no fixed order, and the new one adopts the hook the old one would delete.
//!
//! One lock per repository and URL serialises the old one's deletion with the new one's
//! look-and-adopt, and the hooks this process deleted are remembered, so a status that
//! names one is looked at again rather than trusted after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::Webhook;
use crate::identity::HookAddress;

/// How many idle locks and remembered deletions are kept before old ones are dropped.
const KEPT: usize = 4096;
/// How long a deletion is remembered: longer than any trusted status lasts before the
/// repository's slot looks at Bitbucket anyway.
const REMEMBERED: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Handover {
    locks: Mutex<HashMap<HookAddress, Arc<tokio::sync::Mutex<()>>>>,
    deleted: Mutex<HashMap<String, Instant>>,
}

impl Handover {
    /// Waits until no other Webhook of this repository and URL is being looked at or
    /// deleted; the turn lasts as long as the guard.
    pub async fn turn(&self, w: &Webhook) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > KEPT {
                // Held by nobody but this map.
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(HookAddress::of(w)).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The operator deleted hook `id`.
    pub fn deleted(&self, id: &str) {
        let mut deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        if deleted.len() > KEPT {
            deleted.retain(|_, at| at.elapsed() < REMEMBERED);
        }
        deleted.insert(id.to_owned(), Instant::now());
    }

    /// Whether the hook this Webhook's status names was deleted by this process (an
    /// integer id of another Data Center server may match too: one extra look).
    pub fn was_deleted(&self, w: &Webhook) -> bool {
        let Some(id) = w.status.as_ref().and_then(|s| s.webhook_id.as_deref()) else {
            return false;
        };
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|at| at.elapsed() < REMEMBERED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WebhookSpec, WebhookStatus};

    fn webhook(ns: &str, id: Option<&str>) -> Webhook {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({
            "connectionRef": { "name": "bitbucket" },
            "repository": "ACME/api",
            "url": "https://ci.example.com/hook",
        }))
        .expect("spec");
        let mut w = Webhook::new("ci", spec);
        w.metadata.namespace = Some(ns.into());
        w.status = Some(WebhookStatus {
            webhook_id: id.map(str::to_owned),
            ..Default::default()
        });
        w
    }

    #[tokio::test]
    async fn one_turn_at_a_time_per_repository_and_url() {
        let handover = Handover::default();
        let old = webhook("team-a", Some("{1}"));
        let moved = webhook("team-b", None);
        let turn = handover.turn(&old).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), handover.turn(&moved));
        assert!(waiting.await.is_err(), "the moved one waits");
        drop(turn);
        let _turn = handover.turn(&moved).await;
    }

    #[test]
    fn a_status_naming_a_deleted_hook_is_not_trusted() {
        let handover = Handover::default();
        let adopted = webhook("team-b", Some("{1}"));
        assert!(!handover.was_deleted(&adopted));
        handover.deleted("{1}");
        assert!(handover.was_deleted(&adopted));
        assert!(!handover.was_deleted(&webhook("team-b", Some("{2}"))));
        assert!(!handover.was_deleted(&webhook("team-b", None)));
    }
}
