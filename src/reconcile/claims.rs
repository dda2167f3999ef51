//! One index per process of which Webhooks claim which hook: connection identity +
//! repository + URL. Every namespace's Webhook watch feeds it, so two teams using one
//! ClusterBitbucketConnection from different watched namespaces see each other (each
//! namespace has its own store), and the Conflict check is a lookup, not a scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::{Scope, Webhook};
use crate::identity::{ConnectionId, ConnectionPlace, HookAddress, PlaceKey};

/// What a claim is on: a hook through a connection.
type ClaimKey = (ConnectionId, HookAddress);

/// Who claims: oldest first (creation time, then namespace and name break ties).
type Claimant = (Option<Time>, String, String);

#[derive(Default)]
pub struct Claims {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// uid -> its key and claimant, to move or drop a claim when the object changes.
    by_uid: HashMap<String, (ClaimKey, Claimant)>,
    by_key: HashMap<ClaimKey, BTreeMap<Claimant, String>>,
    /// uid -> (connection, the Webhook's namespace) for every Webhook that exists, being
    /// deleted or not: a connection in use stays until their cleanup is done.
    users: HashMap<String, (ConnectionId, String)>,
    /// uid -> (connection, repository as written) for live repository-scope Webhooks: the
    /// repositories a connection serves, one of which can prove its credential.
    repositories: HashMap<String, (ConnectionId, String)>,
    /// uid -> (connection and place, hook id) for every Webhook whose status records one.
    ids: HashMap<String, (ConnectionPlace, String)>,
}

/// The claim of a Webhook.
fn key_of(w: &Webhook) -> ClaimKey {
    (ConnectionId::of(w), HookAddress::of(w))
}

fn claimant(w: &Webhook) -> Claimant {
    (
        w.creation_timestamp(),
        w.namespace().unwrap_or_default(),
        w.name_any(),
    )
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records (or moves) a Webhook's claim; one being deleted claims nothing (but still
    /// uses its connection).
    pub fn upsert(&self, w: &Webhook) {
        let Some(uid) = w.uid() else { return };
        self.remove_uid(&uid);
        self.lock().users.insert(
            uid.clone(),
            (ConnectionId::of(w), w.namespace().unwrap_or_default()),
        );
        // Its hook stays managed while it is being deleted (its cleanup decides).
        if let Some(id) = w.status.as_ref().and_then(|s| s.webhook_id.clone()) {
            self.lock()
                .ids
                .insert(uid.clone(), (ConnectionPlace::of(w), id));
        }
        if w.metadata.deletion_timestamp.is_some() {
            return;
        }
        let (key, who) = (key_of(w), claimant(w));
        if w.spec.scope == Scope::Repository {
            self.lock()
                .repositories
                .insert(uid.clone(), (key.0.clone(), w.spec.repository.clone()));
        }
        let mut inner = self.lock();
        inner
            .by_key
            .entry(key.clone())
            .or_default()
            .insert(who.clone(), uid.clone());
        inner.by_uid.insert(uid, (key, who));
    }

    /// Drops a Webhook (deleted).
    pub fn remove(&self, w: &Webhook) {
        if let Some(uid) = w.uid() {
            self.remove_uid(&uid);
            self.lock().users.remove(&uid);
        }
    }

    /// The hook ids the Webhooks of a connection record, per place (ids are per server:
    /// another connection's may mean other hooks). One pass over the index.
    pub fn managed_by(
        &self,
        connection: &ConnectionId,
    ) -> HashMap<PlaceKey, std::collections::HashSet<String>> {
        let mut managed: HashMap<PlaceKey, std::collections::HashSet<String>> = HashMap::new();
        for (at, id) in self.lock().ids.values() {
            if at.connection == *connection {
                managed
                    .entry(at.place.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
        managed
    }

    /// The Webhooks ("namespace/name" is not kept: their number) that use a connection.
    pub fn users(&self, connection: &ConnectionId) -> usize {
        self.lock()
            .users
            .values()
            .filter(|(c, _)| c == connection)
            .count()
    }

    /// The repositories live repository-scope Webhooks on `connection` name, sorted,
    /// each once (compared as Bitbucket compares them, case-insensitively).
    pub fn repositories(&self, connection: &ConnectionId) -> Vec<String> {
        let mut found: Vec<String> = self
            .lock()
            .repositories
            .values()
            .filter(|(c, _)| c == connection)
            .map(|(_, r)| r.clone())
            .collect();
        // Deterministic whatever the map's order: case-insensitively, then as written.
        found.sort_by(|a, b| {
            a.to_ascii_lowercase()
                .cmp(&b.to_ascii_lowercase())
                .then_with(|| a.cmp(b))
        });
        found.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        found
    }

    /// How many repositories live repository-scope Webhooks on `connection` name (each
    /// once, case-insensitively), without sorting them.
    pub fn places(&self, connection: &ConnectionId) -> usize {
        self.lock()
            .repositories
            .values()
            .filter(|(c, _)| c == connection)
            .map(|(_, r)| r.to_ascii_lowercase())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    fn remove_uid(&self, uid: &str) {
        let mut inner = self.lock();
        inner.repositories.remove(uid);
        inner.ids.remove(uid);
        if let Some((key, who)) = inner.by_uid.remove(uid)
            && let Some(claimants) = inner.by_key.get_mut(&key)
        {
            claimants.remove(&who);
            if claimants.is_empty() {
                inner.by_key.remove(&key);
            }
        }
    }

    /// Drops every claim from `namespace` (a watch of that namespace restarts its list).
    pub fn forget_namespace(&self, namespace: Option<&str>) {
        let uids: Vec<String> = self
            .lock()
            .users
            .iter()
            .filter(|(_, (_, ns))| namespace.is_none_or(|wanted| ns == wanted))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in uids {
            self.remove_uid(&uid);
            self.lock().users.remove(&uid);
        }
    }

    /// Live Webhooks with `w`'s repository and URL under another connection object
    /// (their connection, namespace and "namespace/name"), oldest first: another
    /// connection may reach the same Bitbucket, as when a Webhook moves to a namespace
    /// with its own connection to the same server.
    pub fn elsewhere(&self, w: &Webhook) -> Vec<(ConnectionId, String, String)> {
        let (mine, address) = key_of(w);
        let inner = self.lock();
        let mut found: Vec<(Claimant, ConnectionId)> = inner
            .by_key
            .iter()
            .filter(|((connection, a), _)| *a == address && *connection != mine)
            .flat_map(|((connection, _), claimants)| {
                claimants
                    .keys()
                    .map(move |who| (who.clone(), connection.clone()))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
            .into_iter()
            .map(|((_, ns, name), connection)| (connection, ns.clone(), format!("{ns}/{name}")))
            .collect()
    }

    /// The older Webhook ("namespace/name") that holds `w`'s claim, if another does.
    pub fn holder(&self, w: &Webhook) -> Option<String> {
        let me = claimant(w);
        let uid = w.uid().unwrap_or_default();
        let inner = self.lock();
        let claimants = inner.by_key.get(&key_of(w))?;
        claimants
            .iter()
            .find(|(who, other)| **other != uid && **who < me)
            .map(|((_, ns, name), _)| format!("{ns}/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnectionKind, WebhookSpec};

    fn webhook(ns: &str, name: &str, uid: &str, created: &str, kind: ConnectionKind) -> Webhook {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({
            "connectionRef": { "kind": kind, "name": "shared" },
            "repository": "ACME/api",
            "url": "https://ci.example.com/hook",
        }))
        .expect("spec");
        let mut w = Webhook::new(name, spec);
        w.metadata.namespace = Some(ns.into());
        w.metadata.uid = Some(uid.into());
        w.metadata.creation_timestamp = Some(Time(created.parse().expect("time")));
        w
    }

    #[test]
    fn a_moved_webhook_is_found_under_the_other_namespace_connection() {
        let claims = Claims::default();
        let namespaced = ConnectionKind::BitbucketConnection;
        let mut old = webhook("team-a", "ci", "1", "2026-01-01T00:00:00Z", namespaced);
        let moved = webhook("team-b", "ci", "2", "2026-01-02T00:00:00Z", namespaced);
        let mut unrelated = webhook("team-c", "other", "3", "2026-01-03T00:00:00Z", namespaced);
        unrelated.spec.settings.url = "https://ci.example.com/other".into();
        for w in [&old, &moved, &unrelated] {
            claims.upsert(w);
        }
        // Different connection objects: no Conflict between them...
        assert_eq!(claims.holder(&moved), None);
        // ...but the one being deleted sees the moved one (same repository and URL).
        old.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        claims.upsert(&old);
        let found = claims.elsewhere(&old);
        assert_eq!(
            found,
            vec![(
                ConnectionId::new(namespaced, Some("team-b"), "shared"),
                "team-b".to_owned(),
                "team-b/ci".to_owned()
            )]
        );
        assert!(claims.elsewhere(&unrelated).is_empty());
    }

    #[test]
    fn the_oldest_claim_wins_across_namespaces_of_a_cluster_connection() {
        let claims = Claims::default();
        let cluster = ConnectionKind::ClusterBitbucketConnection;
        let first = webhook("team-a", "ci", "1", "2026-01-01T00:00:00Z", cluster);
        let mut second = webhook("team-b", "ci", "2", "2026-01-02T00:00:00Z", cluster);
        second.spec.repository = "acme/API".into();
        claims.upsert(&second);
        claims.upsert(&first);
        assert_eq!(claims.holder(&first), None);
        assert_eq!(claims.holder(&second).as_deref(), Some("team-a/ci"));
        // The winner is deleted: the claim passes on.
        let mut deleting = first.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        claims.upsert(&deleting);
        assert_eq!(claims.holder(&second), None);
        assert_eq!(
            claims.users(&ConnectionId::new(cluster, None, "shared")),
            2,
            "a Webhook being deleted still uses its connection"
        );
        claims.upsert(&first);
        let connection = ConnectionId::new(cluster, None, "shared");
        assert_eq!(claims.users(&connection), 2);
        claims.forget_namespace(Some("team-a"));
        assert_eq!(claims.holder(&second), None);
        assert_eq!(claims.users(&connection), 1);
    }

    #[test]
    fn a_connection_serves_each_repository_once_and_not_those_being_deleted() {
        let claims = Claims::default();
        let cluster = ConnectionKind::ClusterBitbucketConnection;
        let connection = ConnectionId::new(cluster, None, "shared");
        let first = webhook("team-a", "ci", "1", "2026-01-01T00:00:00Z", cluster);
        let mut second = webhook("team-b", "ci", "2", "2026-01-02T00:00:00Z", cluster);
        second.spec.repository = "acme/API".into();
        let mut workspace = webhook("team-b", "ws", "3", "2026-01-03T00:00:00Z", cluster);
        workspace.spec.scope = Scope::Workspace;
        workspace.spec.repository = "acme".into();
        for w in [&first, &second, &workspace] {
            claims.upsert(w);
        }
        assert_eq!(
            claims.repositories(&connection),
            vec!["ACME/api".to_owned()]
        );
        let mut deleting = first.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        claims.upsert(&deleting);
        claims.remove(&second);
        assert!(claims.repositories(&connection).is_empty());
    }

    #[test]
    fn namespaced_connections_of_the_same_name_are_different_connections() {
        let claims = Claims::default();
        let namespaced = ConnectionKind::BitbucketConnection;
        let a = webhook("team-a", "ci", "1", "2026-01-01T00:00:00Z", namespaced);
        let b = webhook("team-b", "ci", "2", "2026-01-02T00:00:00Z", namespaced);
        claims.upsert(&a);
        claims.upsert(&b);
        assert_eq!(claims.holder(&b), None);
        // A URL change moves the claim.
        let mut moved = a.clone();
        moved.spec.settings.url = "https://ci.example.com/other".into();
        claims.upsert(&moved);
        claims.remove(&moved);
        assert_eq!(claims.holder(&a), None);
    }
}
