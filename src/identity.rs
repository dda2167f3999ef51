//! The identities every cache, index, slot and metric label is keyed by, each one type
//! with one constructor. Places compare as Bitbucket compares them: project keys,
//! workspaces and repository slugs case-insensitively, so `ACME/api` and `acme/api` are
//! one repository everywhere (one listing, one resync slot, one claim).

use std::fmt;

use crate::api::{ConnectionKind, Scope, Webhook};
use crate::bitbucket::{Credentials, Place};

/// A (Cluster)BitbucketConnection object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    pub kind: ConnectionKind,
    /// The namespace of a BitbucketConnection; None for a cluster connection.
    pub namespace: Option<String>,
    pub name: String,
}

impl ConnectionId {
    /// The connection `name` of `kind`, referred to from `namespace` (the connection's
    /// own, or the namespace of the object that names it): a cluster connection has none.
    pub fn new(kind: ConnectionKind, namespace: Option<&str>, name: &str) -> ConnectionId {
        ConnectionId {
            kind,
            namespace: match kind {
                ConnectionKind::BitbucketConnection => Some(namespace.unwrap_or("").to_owned()),
                ConnectionKind::ClusterBitbucketConnection => None,
            },
            name: name.to_owned(),
        }
    }

    /// The connection a Webhook names.
    pub fn of(w: &Webhook) -> ConnectionId {
        let reference = &w.spec.connection_ref;
        ConnectionId::new(
            reference.kind,
            w.metadata.namespace.as_deref(),
            &reference.name,
        )
    }

    /// Its label in metrics: "namespace/name", or "name" for a cluster connection.
    pub fn metric_label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// "BitbucketConnection/namespace/name", "ClusterBitbucketConnection//name" (logs).
impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let namespace = self.namespace.as_deref().unwrap_or("");
        write!(f, "{:?}/{namespace}/{}", self.kind, self.name)
    }
}

/// Where hooks live (a repository, a project, a workspace), normalised.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaceKey {
    scope: Scope,
    /// "owner/slug", a project key or a workspace, in lower case.
    name: String,
}

impl PlaceKey {
    /// A place at `scope` named `name` as written ("ACME/api", "PRJ", "acme").
    pub fn new(scope: Scope, name: &str) -> PlaceKey {
        PlaceKey {
            scope,
            name: name.to_ascii_lowercase(),
        }
    }

    /// The place a Webhook names, before its flavor is known.
    pub fn of(w: &Webhook) -> PlaceKey {
        PlaceKey::new(w.spec.scope, &w.spec.repository)
    }
}

impl From<&Place> for PlaceKey {
    fn from(place: &Place) -> PlaceKey {
        match place {
            Place::Repository(r) => PlaceKey::new(Scope::Repository, &r.to_string()),
            Place::Project(key) => PlaceKey::new(Scope::Project, key),
            Place::Workspace(w) => PlaceKey::new(Scope::Workspace, w),
        }
    }
}

/// One connection's view of one place: the key of its hook listing and of its resync
/// slot, so every Webhook of a repository through one connection shares both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionPlace {
    pub connection: ConnectionId,
    pub place: PlaceKey,
}

impl ConnectionPlace {
    pub fn new(connection: ConnectionId, place: PlaceKey) -> ConnectionPlace {
        ConnectionPlace { connection, place }
    }

    /// The Webhook's connection and place.
    pub fn of(w: &Webhook) -> ConnectionPlace {
        ConnectionPlace::new(ConnectionId::of(w), PlaceKey::of(w))
    }
}

/// A hook as Bitbucket tells hooks of one place apart: its place and its URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookAddress {
    pub place: PlaceKey,
    /// As written: Bitbucket compares URLs exactly.
    pub url: String,
}

impl HookAddress {
    /// The hook a Webhook stands for. With `urlFrom`, what it names stands in for the URL
    /// (known only once read): two Webhooks bound to one Receiver want one hook.
    pub fn of(w: &Webhook) -> HookAddress {
        let settings = &w.spec.settings;
        let url = match &settings.url_from {
            None => settings.url.clone(),
            Some(source) => {
                let namespace = w.metadata.namespace.as_deref().unwrap_or("");
                let named = match (
                    &source.receiver_ref,
                    &source.config_map_key_ref,
                    &source.secret_key_ref,
                ) {
                    (Some(r), _, _) => format!("Receiver {}", r.name),
                    (None, Some(k), _) => format!("ConfigMap {} {}", k.name, k.key),
                    (None, None, Some(k)) => format!("Secret {} {}", k.name, k.key),
                    (None, None, None) => String::new(),
                };
                format!("urlFrom {namespace} {named}")
            }
        };
        HookAddress {
            place: PlaceKey::of(w),
            url,
        }
    }
}

/// A Bitbucket server: its API root (a connection's baseURL, Cloud's public API when
/// none), without a trailing slash, in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    pub fn new(base_url: Option<&str>) -> ServerName {
        ServerName(
            base_url
                .unwrap_or(crate::bitbucket::CLOUD_API)
                .trim_end_matches('/')
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One request budget: a server and whom Bitbucket counts there (a Basic user, a Bearer
/// token), whatever connection objects use it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    server: ServerName,
    counted_as: String,
}

impl BudgetKey {
    pub fn new(base_url: Option<&str>, credentials: &Credentials) -> BudgetKey {
        BudgetKey {
            server: ServerName::new(base_url),
            counted_as: credentials.counted_as(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(namespace: &str, repository: &str) -> Webhook {
        let spec = serde_json::from_value(serde_json::json!({
            "connectionRef": { "name": "bitbucket" },
            "repository": repository,
            "url": "https://ci.example.com/hook",
        }))
        .expect("spec");
        let mut w = Webhook::new("ci", spec);
        w.metadata.namespace = Some(namespace.to_owned());
        w
    }

    #[test]
    fn servers_compare_without_case_or_trailing_slash() {
        assert_eq!(
            ServerName::new(None),
            ServerName::new(Some("https://API.bitbucket.org/2.0/"))
        );
        assert_eq!(
            ServerName::new(Some("HTTPS://Bitbucket.Example.com/")).to_string(),
            "https://bitbucket.example.com"
        );
        assert_ne!(
            ServerName::new(Some("https://a.example.com/x")),
            ServerName::new(Some("https://a.example.com/y"))
        );
    }

    #[test]
    fn a_repository_is_one_place_whatever_its_case() {
        let (upper, lower) = (webhook("team", "ACME/api"), webhook("team", "acme/api"));
        assert_eq!(ConnectionPlace::of(&upper), ConnectionPlace::of(&lower));
        assert_eq!(HookAddress::of(&upper), HookAddress::of(&lower));
        let place = Place::Repository(crate::bitbucket::RepoRef::parse("Acme/API").expect("repo"));
        assert_eq!(PlaceKey::from(&place), PlaceKey::of(&upper));
        // The listing a reconcile reads (from the validated place) is the slot's group.
        let listing = ConnectionPlace::new(ConnectionId::of(&lower), PlaceKey::from(&place));
        assert_eq!(listing, ConnectionPlace::of(&upper));
        let (now, period) = (
            std::time::Duration::from_secs(1_000_000),
            std::time::Duration::from_secs(600),
        );
        assert_eq!(
            crate::slots::until_next_slot(now, period, &ConnectionPlace::of(&upper)),
            crate::slots::until_next_slot(now, period, &ConnectionPlace::of(&lower)),
        );
        // A project named like a repository's owner is another place.
        assert_ne!(
            PlaceKey::new(Scope::Project, "acme"),
            PlaceKey::new(Scope::Workspace, "acme")
        );
    }

    #[test]
    fn a_namespaced_connection_is_its_namespace_s_and_a_cluster_one_nobody_s() {
        let namespaced = ConnectionId::new(ConnectionKind::BitbucketConnection, Some("a"), "c");
        assert_ne!(
            namespaced,
            ConnectionId::new(ConnectionKind::BitbucketConnection, Some("b"), "c")
        );
        assert_eq!(namespaced.metric_label(), "a/c");
        let cluster = ConnectionId::new(ConnectionKind::ClusterBitbucketConnection, Some("a"), "c");
        assert_eq!(
            cluster,
            ConnectionId::new(ConnectionKind::ClusterBitbucketConnection, None, "c")
        );
        assert_eq!(cluster.metric_label(), "c");
    }
}
