//! One list of a repository's hooks serves every Webhook of that repository for a while;
//! concurrent reconciles of one repository wait for the same list (single flight). The
//! operator's own writes are applied to the cached list, so it stays true.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bitbucket::{RemoteHook, Result};

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Vec<RemoteHook>)>>>;

pub struct RepoLists {
    ttl: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

impl RepoLists {
    pub fn new(ttl: Duration) -> RepoLists {
        RepoLists {
            ttl,
            slots: Mutex::default(),
        }
    }

    fn slot(&self, key: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// The cached list if it is younger than both the TTL and `max_age` (`ZERO`: always
    /// fetch), else a new one from `fetch`, with its age (zero when just fetched).
    pub async fn get<F, Fut>(
        &self,
        key: &str,
        max_age: Duration,
        fetch: F,
    ) -> Result<(Vec<RemoteHook>, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<RemoteHook>>>,
    {
        let slot = self.slot(key);
        let mut entry = slot.lock().await;
        if let Some((at, hooks)) = entry.as_ref()
            && at.elapsed() < self.ttl.min(max_age)
        {
            return Ok((hooks.clone(), at.elapsed()));
        }
        match fetch().await {
            Ok(hooks) => {
                *entry = Some((Instant::now(), hooks.clone()));
                Ok((hooks, Duration::ZERO))
            }
            Err(e) => {
                *entry = None;
                Err(e)
            }
        }
    }

    /// Records a hook the operator created or updated (an update keeps the statistics
    /// the listing had: they describe deliveries, which an update does not change), in
    /// the listing of `key` and in its [`inherited_key`] copy.
    pub async fn upsert(&self, key: &str, hook: RemoteHook) {
        for key in [key.to_owned(), inherited_key(key)] {
            let slot = self.slot(&key);
            let mut entry = slot.lock().await;
            if let Some((_, hooks)) = entry.as_mut() {
                let mut hook = hook.clone();
                if let Some(old) = hooks.iter().position(|h| h.id == hook.id) {
                    let old = hooks.remove(old);
                    hook.stats = hook.stats.or(old.stats);
                }
                hooks.push(hook);
            }
        }
    }

    /// Drops the listing of `key`: what Bitbucket has is no longer known (a write whose
    /// answer was lost).
    pub async fn forget(&self, key: &str) {
        let slot = self.slot(key);
        *slot.lock().await = None;
    }

    /// Records a hook the operator deleted (in both listings, as `upsert`).
    pub async fn remove(&self, key: &str, id: &str) {
        for key in [key.to_owned(), inherited_key(key)] {
            let slot = self.slot(&key);
            let mut entry = slot.lock().await;
            if let Some((_, hooks)) = entry.as_mut() {
                hooks.retain(|h| h.id != id);
            }
        }
    }

    /// Records a hook the operator deleted in `key`'s listings, and drops every other
    /// connection's listing of the same place: another connection may reach the same
    /// server (a Webhook moved to another namespace), or another server with the same
    /// repository names, where an integer id can mean another hook, so they are read
    /// again rather than edited.
    pub async fn deleted(&self, key: &str, id: &str) {
        self.remove(key, id).await;
        let Some((_, place)) = key.split_once('|') else {
            return;
        };
        let suffix = format!("|{place}");
        let own = [key.to_owned(), inherited_key(key)];
        let others: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.ends_with(&suffix) && !own.contains(k))
            .map(|(_, slot)| slot.clone())
            .collect();
        for slot in others {
            *slot.lock().await = None;
        }
    }
}

/// The key of a second listing of the same place, read by the Webhooks of the
/// repositories under it (a project's or workspace's hooks, which they inherit). Kept
/// apart because a refused read is kept there as "nothing known", which must not stand
/// in for the listing an owner-level Webhook acts on.
pub fn inherited_key(key: &str) -> String {
    format!("inherited|{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str) -> RemoteHook {
        RemoteHook {
            id: id.into(),
            active: true,
            ..RemoteHook::default()
        }
    }

    #[tokio::test]
    async fn one_list_serves_until_the_ttl_and_tracks_own_writes() {
        let lists = RepoLists::new(Duration::from_secs(60));
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(vec![hook("1")])
        };
        assert_eq!(
            lists.get("k", Duration::MAX, fetch).await.expect("list").1,
            Duration::ZERO
        );
        let (hooks, age) = lists.get("k", Duration::MAX, fetch).await.expect("list");
        assert!(age > Duration::ZERO, "served from the cache");
        assert_eq!(hooks.len(), 1);
        lists.upsert("k", hook("2")).await;
        lists.remove("k", "1").await;
        let (hooks, _) = lists.get("k", Duration::MAX, fetch).await.expect("list");
        assert_eq!(
            hooks.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["2"]
        );
        lists.get("k", Duration::ZERO, fetch).await.expect("fresh");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_deletion_edits_its_own_listing_and_drops_other_connections_ones() {
        let lists = RepoLists::new(Duration::from_secs(60));
        let listed = |ids: &'static [&'static str]| {
            move || async move { Ok(ids.iter().map(|id| hook(id)).collect::<Vec<_>>()) }
        };
        let ids = |hooks: Vec<RemoteHook>| hooks.into_iter().map(|h| h.id).collect::<Vec<_>>();
        for key in [
            "ns-a/bitbucket|plat/api",
            "ns-b/bitbucket|plat/api",
            "ns-c/other|plat/web",
        ] {
            lists
                .get(key, Duration::MAX, listed(&["2", "3"]))
                .await
                .expect("list");
        }
        lists.deleted("ns-a/bitbucket|plat/api", "2").await;
        let (own, _) = lists
            .get("ns-a/bitbucket|plat/api", Duration::MAX, listed(&["9"]))
            .await
            .expect("list");
        assert_eq!(ids(own), ["3"], "its own listing, edited");
        // The same place through another connection (maybe another server, where "2" is
        // another hook): read again, not edited.
        let (other, age) = lists
            .get(
                "ns-b/bitbucket|plat/api",
                Duration::MAX,
                listed(&["2", "3"]),
            )
            .await
            .expect("list");
        assert_eq!(
            (ids(other), age),
            (vec!["2".to_owned(), "3".to_owned()], Duration::ZERO)
        );
        let (untouched, age) = lists
            .get("ns-c/other|plat/web", Duration::MAX, listed(&["9"]))
            .await
            .expect("list");
        assert!(
            age > Duration::ZERO && ids(untouched) == ["2", "3"],
            "another place"
        );
    }
}
