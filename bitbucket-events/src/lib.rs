//! What Bitbucket webhooks carry, shared by the operator and `bitbucket-sim`:
//! the event catalogue of each backend ([`catalogue`]), typed delivery payloads
//! ([`payload`]) and the `X-Hub-Signature` HMAC ([`signature`]).

pub mod catalogue;
pub mod payload;
pub mod signature;

pub use catalogue::{Backend, EventCheck, check_event, default_events, events};
