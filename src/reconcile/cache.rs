//! One list of a repository's hooks serves every Webhook of that repository for a while;
//! concurrent reconciles of one repository wait for the same list (single flight). The
//! operator's own writes are applied to the cached list, so it stays true.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bitbucket::{RemoteHook, Result};
use crate::identity::{ConnectionId, ConnectionPlace, PlaceKey};

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Vec<RemoteHook>)>>>;

/// Which listing of a place: the one its own Webhooks act on, or the copy the Webhooks
/// of the repositories under it read (a project's or workspace's hooks, which they
/// inherit). Kept apart because a refused read is kept in the copy as "nothing known",
/// which must not stand in for the listing an owner-level Webhook acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Copy {
    Own,
    Inherited,
}

const BOTH: [Copy; 2] = [Copy::Own, Copy::Inherited];

/// How long a refused read of an owner's hooks is believed: the credential will not be
/// let in before it changes (a rebuilt client), and asking each listing period only
/// spends the budget on the same 403 (#23's measurement: three of them after an outage).
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(6 * 3600);

pub struct RepoLists {
    ttl: Duration,
    slots: Mutex<HashMap<(Copy, ConnectionPlace), Slot>>,
    /// When an owner's hooks were refused to a connection, by its key.
    refused: Mutex<HashMap<ConnectionPlace, Instant>>,
    /// The Webhooks (by uid) whose last create this process sent and lost the answer to.
    lost_creates: Mutex<std::collections::HashSet<String>>,
    /// When the operator's own last create or update on a place was answered.
    written: Mutex<HashMap<ConnectionPlace, Instant>>,
}

impl RepoLists {
    pub fn new(ttl: Duration) -> RepoLists {
        RepoLists {
            ttl,
            slots: Mutex::default(),
            refused: Mutex::default(),
            lost_creates: Mutex::default(),
            written: Mutex::default(),
        }
    }

    /// How long ago the operator's own last create or update on `key` was answered.
    pub fn since_own_write(&self, key: &ConnectionPlace) -> Option<Duration> {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(Instant::elapsed)
    }

    /// A create of the Webhook `uid` in `key` failed in a way Bitbucket may have acted on:
    /// the listing is dropped, so any listing of `key` cached from now on was taken after
    /// it and can tell whether the hook was made.
    pub async fn create_lost(&self, key: &ConnectionPlace, uid: &str) {
        self.forget(key).await;
        self.lost_creates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned());
    }

    /// Whether the Webhook's create that may have happened was sent by this process (and
    /// so every cached listing of its place is younger), rather than by one that stopped
    /// (a crash, a leader handover), whose create no cached listing here may show.
    pub fn create_lost_here(&self, uid: &str) -> bool {
        self.lost_creates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
    }

    /// The Webhook's create is settled (made, or refused before Bitbucket acted).
    pub fn create_settled(&self, uid: &str) {
        self.lost_creates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    fn slot(&self, copy: Copy, key: &ConnectionPlace) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((copy, key.clone()))
            .or_default()
            .clone()
    }

    /// The cached list if it is younger than both the TTL and `max_age` (`ZERO`: always
    /// fetch), else a new one from `fetch`, with its age (zero when just fetched).
    pub async fn get<F, Fut>(
        &self,
        key: &ConnectionPlace,
        max_age: Duration,
        fetch: F,
    ) -> Result<(Vec<RemoteHook>, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<RemoteHook>>>,
    {
        self.get_copy(Copy::Own, key, max_age, fetch).await
    }

    /// The same for the copy read by the repositories under the place `key` names.
    /// `fetch` answers `None` when the credential may not read them: nothing is known then,
    /// and that is believed for [`REFUSAL_MEMORY`] unless the connection's client was
    /// rebuilt since (`credential_since`: a new credential may be let in).
    pub async fn get_inherited<F, Fut>(
        &self,
        key: &ConnectionPlace,
        credential_since: Option<Instant>,
        fetch: F,
    ) -> Result<(Vec<RemoteHook>, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Vec<RemoteHook>>>>,
    {
        let refused_at = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied();
        if let Some(at) = refused_at
            && at.elapsed() < REFUSAL_MEMORY
            && credential_since.is_none_or(|since| since < at)
        {
            return Ok((Vec::new(), at.elapsed()));
        }
        self.get_copy(Copy::Inherited, key, Duration::MAX, || async {
            let listed = fetch().await?;
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            match listed {
                Some(hooks) => {
                    refused.remove(key);
                    Ok(hooks)
                }
                None => {
                    refused.insert(key.clone(), Instant::now());
                    Ok(Vec::new())
                }
            }
        })
        .await
    }

    async fn get_copy<F, Fut>(
        &self,
        copy: Copy,
        key: &ConnectionPlace,
        max_age: Duration,
        fetch: F,
    ) -> Result<(Vec<RemoteHook>, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<RemoteHook>>>,
    {
        let slot = self.slot(copy, key);
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
    /// both listings of `key`.
    pub async fn upsert(&self, key: &ConnectionPlace, hook: RemoteHook) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), Instant::now());
        for copy in BOTH {
            let slot = self.slot(copy, key);
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
    pub async fn forget(&self, key: &ConnectionPlace) {
        let slot = self.slot(Copy::Own, key);
        *slot.lock().await = None;
    }

    /// Records a hook the operator deleted (in both listings, as `upsert`).
    pub async fn remove(&self, key: &ConnectionPlace, id: &str) {
        for copy in BOTH {
            let slot = self.slot(copy, key);
            let mut entry = slot.lock().await;
            if let Some((_, hooks)) = entry.as_mut() {
                hooks.retain(|h| h.id != id);
            }
        }
    }

    /// Visits the listings of `connection`'s places held now, for counting, without
    /// copying them (one being fetched right now is left out rather than waited for).
    pub fn for_each_listing(
        &self,
        connection: &ConnectionId,
        mut visit: impl FnMut(&PlaceKey, &[RemoteHook]),
    ) {
        let slots: Vec<(PlaceKey, Slot)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((copy, key), _)| *copy == Copy::Own && key.connection == *connection)
            .map(|((_, key), slot)| (key.place.clone(), slot.clone()))
            .collect();
        for (place, slot) in slots {
            if let Ok(entry) = slot.try_lock()
                && let Some((_, hooks)) = entry.as_ref()
            {
                visit(&place, hooks);
            }
        }
    }

    /// Records a hook the operator deleted in `key`'s listings, and drops every other
    /// connection's listing of the same place: another connection may reach the same
    /// server (a Webhook moved to another namespace), or another server with the same
    /// repository names, where an integer id can mean another hook, so they are read
    /// again rather than edited.
    pub async fn deleted(&self, key: &ConnectionPlace, id: &str) {
        self.remove(key, id).await;
        let others: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((_, k), _)| k.place == key.place && k.connection != key.connection)
            .map(|(_, slot)| slot.clone())
            .collect();
        for slot in others {
            *slot.lock().await = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnectionKind, Scope};
    use crate::identity::{ConnectionId, PlaceKey};

    fn key(namespace: &str, connection: &str, repository: &str) -> ConnectionPlace {
        ConnectionPlace::new(
            ConnectionId::new(
                ConnectionKind::BitbucketConnection,
                Some(namespace),
                connection,
            ),
            PlaceKey::new(Scope::Repository, repository),
        )
    }

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
        let k = &key("ns", "bitbucket", "acme/api");
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(vec![hook("1")])
        };
        assert_eq!(
            lists.get(k, Duration::MAX, fetch).await.expect("list").1,
            Duration::ZERO
        );
        let (hooks, age) = lists.get(k, Duration::MAX, fetch).await.expect("list");
        assert!(age > Duration::ZERO, "served from the cache");
        assert_eq!(hooks.len(), 1);
        lists.upsert(k, hook("2")).await;
        lists.remove(k, "1").await;
        let (hooks, _) = lists.get(k, Duration::MAX, fetch).await.expect("list");
        assert_eq!(
            hooks.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["2"]
        );
        lists.get(k, Duration::ZERO, fetch).await.expect("fresh");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_refused_owner_listing_is_not_asked_again_until_the_credential_changes() {
        // A TTL so short that every call would fetch again, were it not for the refusal.
        let lists = RepoLists::new(Duration::from_millis(1));
        let k = &key("ns", "bitbucket", "acme");
        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(None)
        };
        let built = Instant::now();
        for _ in 0..3 {
            let (hooks, _) = lists
                .get_inherited(k, Some(built), refused)
                .await
                .expect("empty");
            assert!(hooks.is_empty());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "asked once"
        );
        // A new credential (the client rebuilt after the refusal) is asked, and let in.
        let readable = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Some(vec![hook("7")]))
        };
        let (hooks, _) = lists
            .get_inherited(k, Some(Instant::now()), readable)
            .await
            .expect("listed");
        assert_eq!(hooks.len(), 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
        // Once read, the listing period applies again.
        tokio::time::sleep(Duration::from_millis(5)).await;
        lists
            .get_inherited(k, None, readable)
            .await
            .expect("listed");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_deletion_edits_its_own_listing_and_drops_other_connections_ones() {
        let lists = RepoLists::new(Duration::from_secs(60));
        let listed = |ids: &'static [&'static str]| {
            move || async move { Ok(ids.iter().map(|id| hook(id)).collect::<Vec<_>>()) }
        };
        let ids = |hooks: Vec<RemoteHook>| hooks.into_iter().map(|h| h.id).collect::<Vec<_>>();
        let (a, b, c) = (
            key("ns-a", "bitbucket", "plat/api"),
            key("ns-b", "bitbucket", "PLAT/api"),
            key("ns-c", "other", "plat/web"),
        );
        for key in [&a, &b, &c] {
            lists
                .get(key, Duration::MAX, listed(&["2", "3"]))
                .await
                .expect("list");
        }
        lists.deleted(&a, "2").await;
        let (own, _) = lists
            .get(&a, Duration::MAX, listed(&["9"]))
            .await
            .expect("list");
        assert_eq!(ids(own), ["3"], "its own listing, edited");
        // The same place through another connection (maybe another server, where "2" is
        // another hook): read again, not edited.
        let (other, age) = lists
            .get(&b, Duration::MAX, listed(&["2", "3"]))
            .await
            .expect("list");
        assert_eq!(
            (ids(other), age),
            (vec!["2".to_owned(), "3".to_owned()], Duration::ZERO)
        );
        let (untouched, age) = lists
            .get(&c, Duration::MAX, listed(&["9"]))
            .await
            .expect("list");
        assert!(
            age > Duration::ZERO && ids(untouched) == ["2", "3"],
            "another place"
        );
    }
}
