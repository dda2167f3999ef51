//! Bitbucket Cloud credential scopes: which scope each webhook call needs, per kind of
//! credential, and the refusal Cloud answers when it is missing.
//!
//! Sources: the Cloud OpenAPI in `specs/` (`/user` needs `account`; the hook paths need
//! `webhook`), Atlassian's per-token scope lists (repository and project access tokens
//! cannot hold `account`; API tokens use `read:webhook:bitbucket`, `write:...`,
//! `delete:...` and `read:user:bitbucket`), and public clients that print Cloud's refusal:
//! "Your credentials lack one or more required privilege scopes." with
//! `detail: {required, granted}`. Whether the refusal is 403 or 401 is not documented:
//! `PUT /_sim/variants {"cloudScopeStatus"}` serves either. Creating or updating a hook
//! also needs the scope of each event family it subscribes to (the spec's text for
//! `POST .../hooks`; see `check_events`).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::{Caller, authenticate};
use crate::state::{State, Token, TokenKind};

/// What a Cloud call does, for its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    ReadHooks,
    WriteHooks,
    DeleteHooks,
    /// `GET /user`.
    Account,
    /// `GET /repositories/{workspace}` (the spec: oauth2 `repository`, API tokens
    /// `read:repository:bitbucket`).
    ReadRepositories,
}

fn granular(scope: &str) -> bool {
    scope.ends_with(":bitbucket")
}

/// Whether a credential of `kind` can be given `scope` at all.
pub fn can_hold(kind: TokenKind, scope: &str) -> bool {
    match kind {
        TokenKind::ApiToken => granular(scope),
        // Atlassian's access-token permission pages: repositories, pull requests,
        // webhooks, pipelines, runners (project tokens: also the project); no account or
        // issue permission.
        TokenKind::RepositoryAccessToken | TokenKind::ProjectAccessToken => {
            !granular(scope) && scope != "account" && !scope.starts_with("issue")
        }
        TokenKind::WorkspaceAccessToken | TokenKind::Oauth => !granular(scope),
    }
}

/// The scope a call needs from a credential of `kind`.
pub fn required(kind: TokenKind, need: Need) -> &'static str {
    match (kind, need) {
        (TokenKind::ApiToken, Need::ReadHooks) => "read:webhook:bitbucket",
        (TokenKind::ApiToken, Need::WriteHooks) => "write:webhook:bitbucket",
        (TokenKind::ApiToken, Need::DeleteHooks) => "delete:webhook:bitbucket",
        (TokenKind::ApiToken, Need::Account) => "read:user:bitbucket",
        (TokenKind::ApiToken, Need::ReadRepositories) => "read:repository:bitbucket",
        (_, Need::Account) => "account",
        (_, Need::ReadRepositories) => "repository",
        (_, _) => "webhook",
    }
}

/// Whether `granted` covers `scope`: `X:write` implies `X`, and `pullrequest` implies
/// `repository` (Atlassian's "Scopes for the Bitbucket Cloud REST API"; `X:admin` implies
/// neither).
fn covers(granted: &[String], scope: &str) -> bool {
    granted.iter().any(|g| {
        g == scope
            || g.strip_suffix(":write") == Some(scope)
            || (scope == "repository" && g.starts_with("pullrequest") && !g.ends_with(":admin"))
    })
}

/// The scope an event family needs from a credential of `kind`: the OAuth-style name for
/// access tokens and OAuth consumers; for API tokens `read:<family>:bitbucket`, only
/// when `/_sim/variants` `cloudApiTokenEventScopes` is on (the spec's scope list for the
/// operation names only the webhook scopes; its text does not say which granular scope
/// "applies to" an event).
fn event_scope(kind: TokenKind, family: &'static str, api_tokens_too: bool) -> Option<String> {
    match kind {
        TokenKind::ApiToken if api_tokens_too => Some(format!("read:{family}:bitbucket")),
        TokenKind::ApiToken => None,
        _ => Some(family.to_owned()),
    }
}

/// The caller's registered credential and its kind, if it has one (unknown or absent
/// credentials, and those registered without a kind, have none).
pub fn caller_token<'a>(state: &'a State, headers: &HeaderMap) -> Option<(&'a Token, TokenKind)> {
    let Caller::Known(principal) = authenticate(state, headers) else {
        return None;
    };
    let token = state.tokens.get(&principal.token)?;
    Some((token, token.kind?))
}

/// Refuses a hook's create or update as Cloud does when the credential lacks the scope
/// of an event family it subscribes to (every missing one is named).
pub fn check_events(state: &State, headers: &HeaderMap, events: &[String]) -> Result<(), Response> {
    let Some((token, kind)) = caller_token(state, headers) else {
        return Ok(());
    };
    let mut missing: Vec<String> = events
        .iter()
        .filter_map(|e| bitbucket_events::catalogue::cloud_event_scope(e))
        .filter_map(|family| event_scope(kind, family, state.variants.cloud_api_token_event_scopes))
        .filter(|scope| !covers(&token.scopes, scope))
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    Err(refusal(state, missing, &token.scopes))
}

/// Cloud's scope refusal: 403 (or 401, `cloudScopeStatus`) naming what is required.
fn refusal(state: &State, required: Vec<String>, granted: &[String]) -> Response {
    let status =
        StatusCode::from_u16(state.variants.cloud_scope_status).unwrap_or(StatusCode::FORBIDDEN);
    let body = json!({
        "type": "error",
        "error": {
            "message": "Your credentials lack one or more required privilege scopes.",
            "detail": { "required": required, "granted": granted },
        },
    });
    (status, axum::Json(body)).into_response()
}

/// Refuses the call as Cloud does if the caller's credential lacks the scope. Unknown or
/// absent credentials, and credentials registered without a kind, pass (they are judged
/// elsewhere, or not modelled).
pub fn check(state: &State, headers: &HeaderMap, need: Need) -> Result<(), Response> {
    let Some((token, kind)) = caller_token(state, headers) else {
        return Ok(());
    };
    let scope = required(kind, need);
    if token.scopes.iter().any(|s| s == scope) {
        return Ok(());
    }
    Err(refusal(state, vec![scope.to_owned()], &token.scopes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_project_tokens_cannot_hold_account() {
        for kind in [
            TokenKind::RepositoryAccessToken,
            TokenKind::ProjectAccessToken,
        ] {
            assert!(!can_hold(kind, "account"));
            assert!(!can_hold(kind, "issue"));
            assert!(can_hold(kind, "webhook"));
        }
        assert!(can_hold(TokenKind::WorkspaceAccessToken, "account"));
        assert!(can_hold(TokenKind::ApiToken, "read:user:bitbucket"));
        assert!(!can_hold(TokenKind::ApiToken, "webhook"));
        assert_eq!(
            required(TokenKind::ApiToken, Need::DeleteHooks),
            "delete:webhook:bitbucket"
        );
        assert_eq!(required(TokenKind::Oauth, Need::WriteHooks), "webhook");
    }
}
