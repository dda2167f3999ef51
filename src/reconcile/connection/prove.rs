//! Proving a connection's credential: the identity call, and where a refusal of it is
//! only a hint (Cloud, whose repository and project access tokens may not call it), a
//! listing of the hooks of a repository the connection's Webhooks name.

use crate::api::{Reason, VerifiedBy};
use crate::bitbucket::{self, WebhookBackend};
use crate::reconcile::claims::Claims;
use crate::reconcile::{Error, Invalid};

use super::view::View;

/// What proved a connection's credential, for its status.
#[derive(Debug, Clone)]
pub struct Proof {
    pub by: VerifiedBy,
    pub repository: Option<String>,
    pub reason: Reason,
    pub message: String,
    /// When it was proven, if not now (the credential's own requests proved it).
    pub at: Option<jiff::Timestamp>,
}

/// At most this many repositories are tried to prove a credential whose identity call
/// was refused (a repository may be gone: 404 proves nothing).
const PROOF_REPOSITORIES: usize = 3;

/// Proves the credential: the identity call, and where a refusal of it is only a hint
/// (Cloud), a listing of the hooks of a repository the connection serves.
pub async fn prove(
    view: &View,
    claims: &Claims,
    backend: &dyn WebhookBackend,
) -> Result<Proof, Error> {
    let refused = match backend.verify_credentials().await {
        Ok(identity) => {
            return Ok(Proof {
                by: VerifiedBy::Identity,
                repository: None,
                reason: Reason::Verified,
                message: verified_message(&identity),
                at: None,
            });
        }
        Err(e) if refusal(&e) && !backend.identity_is_conclusive() => e,
        Err(e) => return Err(not_bitbucket(view, e)),
    };
    let call = backend.identity_call();
    let repositories = claims.repositories(&view.id);
    for repository in repositories.iter().take(PROOF_REPOSITORIES) {
        let Some(repo) = bitbucket::RepoRef::parse(repository) else {
            continue;
        };
        match backend
            .list_hooks(&bitbucket::Place::Repository(repo))
            .await
        {
            // Listed, or refused for what the credential lacks on this repository: either
            // way Bitbucket knew the credential.
            Ok(_)
            | Err(bitbucket::Error::Forbidden { .. } | bitbucket::Error::MissingScope { .. }) => {
                return Ok(Proof {
                    by: VerifiedBy::Repository,
                    repository: Some(repository.clone()),
                    reason: Reason::Verified,
                    message: format!(
                        "Bitbucket accepted the credential when listing the hooks of {repository}; it refused {call} ({refused}), which repository and project access tokens may not call"
                    ),
                    at: None,
                });
            }
            Err(bitbucket::Error::NotFound { .. }) => {}
            Err(bitbucket::Error::Unauthorized { message }) => {
                return Err(bitbucket::Error::Unauthorized {
                    message: format!(
                        "{message} (listing the hooks of {repository}; {call} was refused too: {refused})"
                    ),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let why = if repositories.is_empty() {
        "no Webhook uses this connection yet"
    } else {
        "the repositories its Webhooks name were not found"
    };
    let hint = if basic_on_cloud(view) && matches!(refused, bitbucket::Error::Unauthorized { .. }) {
        format!(" If it is an app password: {APP_PASSWORDS}.")
    } else {
        String::new()
    };
    Ok(Proof {
        by: VerifiedBy::Unverified,
        repository: None,
        reason: Reason::Unverified,
        message: format!(
            "Bitbucket refused {call} ({refused}), which repository and project access tokens may not call, and {why}: the credential is used as it is, and the first Webhook's requests prove it or say why not.{hint}"
        ),
        at: None,
    })
}

/// The credential proven by its own requests, with no call of its own: a verified
/// connection (of this generation) whose credential Bitbucket accepted since its client
/// was built and within `within`, and is not failing now. Re-verifying then would spend
/// the budget to learn what the Webhooks' requests just showed (#23).
pub fn by_use(
    previous: Option<&crate::api::ConnectionStatus>,
    generation: Option<i64>,
    accepted: Option<(std::time::Instant, jiff::Timestamp)>,
    built: Option<std::time::Instant>,
    within: std::time::Duration,
) -> Option<Proof> {
    let previous = previous?;
    let (instant, at) = accepted?;
    let ready = crate::reconcile::conditions::find(
        &previous.conditions,
        crate::reconcile::conditions::READY,
    )
    .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
    let proven = matches!(
        previous.verified_by,
        Some(VerifiedBy::Identity | VerifiedBy::Repository)
    );
    let fresh = instant.elapsed() < within && built.is_none_or(|b| b < instant);
    (ready && proven && previous.observed_generation == generation && fresh).then(|| Proof {
        by: previous.verified_by.unwrap_or(VerifiedBy::Identity),
        repository: previous.verified_repository.clone(),
        reason: Reason::Verified,
        message: format!(
            "Bitbucket accepted this credential's requests, the last at {at}: no check of its own was needed"
        ),
        at: Some(at),
    })
}

/// A Basic credential refused by Cloud is most likely an app password: Atlassian stopped
/// their creation on 2025-09-09 and turned the last ones off on 2026-07-28.
const APP_PASSWORDS: &str = "Cloud app passwords stopped working on 2026-07-28: use an Atlassian API token (username: the account's email) or an access token (auth.type Bearer)";

fn basic_on_cloud(view: &View) -> bool {
    view.spec.flavor == crate::api::Flavor::Cloud
        && view.spec.auth.type_ == crate::api::AuthType::Basic
}

pub fn app_password_hint(view: &View, e: Error) -> Error {
    match e {
        Error::Bitbucket(bitbucket::Error::Unauthorized { message }) if basic_on_cloud(view) => {
            bitbucket::Error::Unauthorized {
                message: format!("{message}. {APP_PASSWORDS}"),
            }
            .into()
        }
        e => e,
    }
}

/// A 401 or 403: the credential was refused (bad, or lacking what this call needs).
pub fn refusal(e: &bitbucket::Error) -> bool {
    matches!(
        e,
        bitbucket::Error::Unauthorized { .. }
            | bitbucket::Error::Forbidden { .. }
            | bitbucket::Error::MissingScope { .. }
    )
}

/// A 404 where every Bitbucket of the flavor answers the identity call: the baseURL or
/// the flavor is wrong, which the spec's owner fixes (reason InvalidSpec).
fn not_bitbucket(view: &View, e: bitbucket::Error) -> Error {
    match e {
        bitbucket::Error::NotFound { message } => Error::InvalidSpec(Invalid::Connection(format!(
            "baseURL {} does not answer as a Bitbucket {:?} API ({message}): check spec.baseURL and spec.flavor (Cloud's API is https://api.bitbucket.org/2.0; a Data Center server's is its root URL, without /rest)",
            view.spec
                .base_url
                .as_deref()
                .unwrap_or(bitbucket::CLOUD_API),
            view.spec.flavor
        ))),
        e => e.into(),
    }
}

fn verified_message(identity: &bitbucket::Identity) -> String {
    let who = match &identity.user {
        Some(user) => format!("authenticated to Bitbucket as {user}"),
        None => "Bitbucket accepted the credential".to_owned(),
    };
    match &identity.detail {
        Some(detail) => format!("{who}; {detail}"),
        None => who,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::api::ConnectionStatus;
    use crate::reconcile::conditions::{self, Outcome, Status};

    fn verified(by: VerifiedBy, ready: Status, generation: i64) -> ConnectionStatus {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        ConnectionStatus {
            observed_generation: Some(generation),
            verified_by: Some(by),
            conditions: vec![conditions::condition(
                &[],
                conditions::READY,
                &Outcome::new(ready, Reason::Verified, "m"),
                Some(generation),
                &now,
            )],
            ..ConnectionStatus::default()
        }
    }

    #[test]
    fn only_recent_requests_of_the_current_credential_prove_a_verified_connection() {
        let hour = Duration::from_secs(3600);
        let now = Instant::now();
        let accepted = Some((now, jiff::Timestamp::now()));
        let ok = verified(VerifiedBy::Repository, Status::True, 2);
        let proof = by_use(Some(&ok), Some(2), accepted, None, hour).expect("proven");
        assert_eq!(
            (proof.by, proof.at.is_some()),
            (VerifiedBy::Repository, true)
        );
        let cases = [
            ("never verified", None, accepted, None),
            (
                "unverified",
                Some(verified(VerifiedBy::Unverified, Status::True, 2)),
                accepted,
                None,
            ),
            (
                "not ready",
                Some(verified(VerifiedBy::Identity, Status::False, 2)),
                accepted,
                None,
            ),
            (
                "another generation",
                Some(verified(VerifiedBy::Identity, Status::True, 1)),
                accepted,
                None,
            ),
            ("nothing accepted", Some(ok.clone()), None, None),
            (
                "accepted before the credential changed",
                Some(ok.clone()),
                accepted,
                Some(now + Duration::from_millis(1)),
            ),
        ];
        for (case, status, accepted, built) in cases {
            assert!(
                by_use(status.as_ref(), Some(2), accepted, built, hour).is_none(),
                "{case}"
            );
        }
        assert!(
            by_use(Some(&ok), Some(2), accepted, None, Duration::ZERO).is_none(),
            "too long ago"
        );
    }
}
