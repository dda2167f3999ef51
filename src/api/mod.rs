//! The custom resources: `Webhook`, `BitbucketConnection`, `ClusterBitbucketConnection`.

mod connection;
mod crds;
mod shared;
mod webhook;

pub use connection::*;
pub use crds::{all_crds, crd_file_name, crd_yaml};
pub use webhook::*;

/// The API group of every kind here.
pub const GROUP: &str = "bitbucket.hooks.dev";
/// The finalizer that makes deletion remove (or deliberately orphan) the Bitbucket hook.
pub const FINALIZER: &str = "bitbucket.hooks.dev/cleanup";
/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "bitbucket-webhook-operator";
