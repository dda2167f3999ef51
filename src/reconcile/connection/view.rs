//! Either kind of connection object, as the reconcilers need it.

use kube::ResourceExt;

use crate::api::{
    BitbucketConnection, ClusterBitbucketConnection, ConnectionKind, ConnectionSpec,
    ConnectionStatus, Reason,
};
use crate::identity::ConnectionId;
use crate::reconcile::Error;
use crate::reconcile::conditions::{self, Status};

/// A connection's budget when its spec names none (the CRD's default).
pub const DEFAULT_REQUESTS_PER_HOUR: u32 = 900;

/// Either kind of connection, as the reconcilers need it.
#[derive(Clone, Debug)]
pub struct View {
    pub id: ConnectionId,
    /// Where its credential Secrets are.
    pub secret_namespace: String,
    pub spec: ConnectionSpec,
    pub status: Option<ConnectionStatus>,
    pub generation: Option<i64>,
    pub uid: String,
}

impl View {
    pub fn namespaced(c: &BitbucketConnection) -> View {
        let namespace = c.namespace().unwrap_or_default();
        View {
            id: ConnectionId::new(
                ConnectionKind::BitbucketConnection,
                Some(&namespace),
                &c.name_any(),
            ),
            secret_namespace: namespace,
            spec: c.spec.connection.clone(),
            status: c.status.clone(),
            generation: c.metadata.generation,
            uid: c.uid().unwrap_or_default(),
        }
    }

    pub fn cluster(c: &ClusterBitbucketConnection, secret_namespace: &str) -> View {
        View {
            id: ConnectionId::new(
                ConnectionKind::ClusterBitbucketConnection,
                None,
                &c.name_any(),
            ),
            secret_namespace: secret_namespace.to_owned(),
            spec: c.spec.connection.clone(),
            status: c.status.clone(),
            generation: c.metadata.generation,
            uid: c.uid().unwrap_or_default(),
        }
    }

    /// The connection object's name.
    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// The connection's request budget per hour.
    pub fn requests_per_hour(&self) -> u32 {
        self.spec
            .rate_limit
            .as_ref()
            .map_or(DEFAULT_REQUESTS_PER_HOUR, |r| {
                u32::try_from(r.requests_per_hour).unwrap_or(1).max(1)
            })
    }

    /// The Bitbucket this connection reaches: its flavor and API root, normalised. Two
    /// connections with the same server manage the same hooks.
    pub fn server(&self) -> String {
        let base = self
            .spec
            .base_url
            .as_deref()
            .unwrap_or(crate::bitbucket::CLOUD_API)
            .trim_end_matches('/')
            .to_ascii_lowercase();
        format!("{:?} {base}", self.spec.flavor)
    }

    /// Whether the connection verified its credentials for its current spec.
    pub fn readiness(&self) -> Result<(), Error> {
        let status = self.status.as_ref();
        let ready = status.and_then(|s| conditions::find(&s.conditions, conditions::READY));
        match ready.map(|c| (c, Status::of(c))) {
            Some((c, Status::True)) if c.observed_generation == self.generation => Ok(()),
            Some((c, Status::False | Status::Unknown)) => Err(Error::ConnectionNotReady {
                name: self.id.name.clone(),
                reason: conditions::reason(c).unwrap_or(Reason::ConnectionNotReady),
                message: c.message.clone(),
            }),
            _ => Err(Error::ConnectionNotReady {
                name: self.id.name.clone(),
                reason: Reason::Verifying,
                message: "its credentials have not been verified yet".to_owned(),
            }),
        }
    }

    /// Whether Ready holds for the current generation.
    pub fn verified(&self) -> bool {
        self.readiness().is_ok()
    }
}
