//! The custom resources: `Webhook`, `WebhookSet`, `BitbucketConnection`,
//! `ClusterBitbucketConnection`.

mod connection;
mod crds;
mod reason;
mod shared;
mod webhook;
mod webhookset;

pub use connection::*;
pub use crds::{all_crds, crd_file_name, crd_yaml};
pub use reason::Reason;
pub use webhook::*;
pub use webhookset::*;

/// The API group of every kind here.
pub const GROUP: &str = "bitbucket.hooks.dev";
/// The finalizer that makes deletion remove (or deliberately orphan) the Bitbucket hook.
pub const FINALIZER: &str = "bitbucket.hooks.dev/cleanup";
/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "bitbucket-webhook-operator";

/// Annotation: "true" releases a Webhook whose deletion cannot reach Bitbucket; the hook
/// is left in place.
pub const FORCE_ORPHAN_ANNOTATION: &str = "bitbucket.hooks.dev/force-orphan";
/// Annotation: each new value asks for one test delivery (Data Center).
pub const TEST_REQUESTED_ANNOTATION: &str = "bitbucket.hooks.dev/test-requested";
/// Annotation the operator sets before it creates a hook and clears once the hook's id is
/// in status: after a crash in between, the hook with this URL is known to be ours.
pub const PENDING_CREATE_ANNOTATION: &str = "bitbucket.hooks.dev/pending-create";
/// The label a Secret created by `secretRef.generate` carries.
pub const GENERATED_LABEL: &str = "bitbucket.hooks.dev/generated-for";
