//! bitbucket-webhook-operator: Bitbucket webhooks as Kubernetes custom resources.

pub mod api;
pub mod bitbucket;
pub mod check;
pub mod export;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod metrics;
pub mod reconcile;
pub mod runtime;
pub mod slots;
#[cfg(feature = "otel")]
pub mod telemetry;
