//! `bitbucket-sim`: an in-memory Bitbucket for tests, benchmarks and the demo.
//!
//! Skeleton only. The simulator (Cloud 2.0, Data Center, the Post Webhooks app and the
//! `/_sim/` control API) is issue 3; nothing in the operator depends on this crate.

/// What the binary says while the simulator does not exist.
pub const NOT_YET: &str = "bitbucket-sim is a skeleton: the simulator is not implemented yet";
