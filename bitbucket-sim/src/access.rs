//! Who may manage webhooks: only administrators of the repository (or of the workspace /
//! project for hooks at that level, who administer its repositories too).

use axum::http::HeaderMap;

use crate::http::{Caller, Principal, authenticate};
use crate::state::{Platform, Scope, State};

/// Why a caller may not manage a scope's hooks.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials.
    Anonymous,
    /// Credentials that match no registered token.
    InvalidCredentials,
    /// The repository, workspace or project does not exist.
    NotFound,
    /// Known caller without admin rights on the scope.
    NotAdmin,
}

/// The caller, if it administers `scope`.
pub fn admin(
    state: &State,
    headers: &HeaderMap,
    platform: Platform,
    scope: &Scope,
) -> Result<Principal, Denied> {
    let principal = match authenticate(state, headers) {
        Caller::Invalid => return Err(Denied::InvalidCredentials),
        Caller::Anonymous => None,
        Caller::Known(p) => Some(p),
    };
    state.admins(platform, scope).ok_or(Denied::NotFound)?;
    let principal = principal.ok_or(Denied::Anonymous)?;
    if state.administers(platform, scope, &principal.token) {
        Ok(principal)
    } else {
        Err(Denied::NotAdmin)
    }
}

/// Any authenticated caller (for cheap credential checks).
pub fn authenticated(state: &State, headers: &HeaderMap) -> Result<Option<Principal>, Denied> {
    match authenticate(state, headers) {
        Caller::Invalid => Err(Denied::InvalidCredentials),
        Caller::Anonymous => Ok(None),
        Caller::Known(p) => Ok(Some(p)),
    }
}
