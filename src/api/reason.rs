//! Every condition and Event reason the operator writes, in one place. The names are
//! stable API: alerts, `kubectl wait` and GitOps health checks match on them. README's
//! troubleshooting section documents each one (a test holds it to that).

use strum::{EnumIter, EnumString, IntoStaticStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, EnumString, IntoStaticStr)]
pub enum Reason {
    // ---------------------------------------------------------------- Synced / Ready
    /// Ready's reason while Synced is True.
    Ready,
    /// The hook on Bitbucket matches the spec.
    InSync,
    /// This reconcile created the hook.
    Created,
    /// An existing hook with the same URL was taken over (`adoption: Adopt`).
    Adopted,
    /// Fields of the hook were changed to match the spec.
    Updated,
    /// The hook differs from the spec (or was deleted) and policy says report.
    Drifted,
    /// ObserveOnly and no hook with this URL exists; or Bitbucket answered 404.
    NotFound,
    /// The referenced connection does not exist.
    ConnectionNotFound,
    /// The connection's credentials are not verified (yet).
    ConnectionNotReady,
    /// The connection is being verified for the first time.
    Verifying,
    /// Bitbucket rejected the credentials.
    Unauthorized,
    /// The credential lacks a permission or a token scope.
    Forbidden,
    /// A referenced Secret does not exist (or is gone with no credential kept to clean up).
    SecretNotFound,
    /// A referenced Secret lacks its key, or the value is empty or malformed.
    SecretInvalid,
    /// The spec is refused, by the operator or by Bitbucket.
    InvalidSpec,
    /// Policy refuses this combination (cluster connection scope, private targets).
    NotAllowed,
    /// Another Webhook already manages this repository + URL through the connection.
    Conflict,
    /// The repository does not exist or the credential cannot see it.
    RepositoryNotFound,
    /// 5xx, timeouts or connection failures.
    BitbucketUnavailable,
    /// Bitbucket answered 429, or the connection's request budget is spent.
    RateLimited,
    /// The backend cannot do what the spec asks.
    Unsupported,
    /// Bitbucket answered in a way the client did not expect.
    UnexpectedResponse,
    /// A project or workspace hook with the same URL is inherited by the repository:
    /// each delivery arrives twice (condition DuplicateDeliveries, Warning Event).
    InheritedDuplicate,
    /// The Kubernetes API refused or failed a request.
    KubernetesError,
    /// `urlFrom.receiverRef`: the Flux Receiver is missing, not Ready, has no
    /// `webhookPath` yet, or the operator may not read it; nothing is written to Bitbucket.
    ReceiverNotReady,
    /// `urlFrom`: the ConfigMap or Secret holding the URL, or its key, does not exist.
    UrlSourceNotFound,
    /// The finalizer could not be added or removed.
    FinalizerError,

    // ---------------------------------------------------------------- Delivering
    /// There is no hook to deliver (ObserveOnly and none found, or deleted in Bitbucket).
    NoHook,
    /// The hook is not in sync, so its deliveries say nothing about the spec.
    NotSynced,
    /// Data Center: the statistics poll is due with the repository's next listing.
    StatisticsPending,
    /// Data Center: no delivery since the hook was created.
    NoDeliveries,
    /// Data Center: the recent deliveries failed.
    DeliveriesFailing,
    /// Data Center: some recent deliveries failed.
    DeliveriesDegraded,
    /// Data Center: the recent deliveries succeeded.
    DeliveriesSucceed,
    /// The probe was not sent: the target is a private address and not allowed.
    ProbeRefused,
    /// The probe got no HTTP answer (DNS, connection, timeout).
    EndpointUnreachable,
    /// The endpoint's TLS certificate is not accepted.
    CertificateRejected,
    /// The endpoint's TLS certificate expires soon.
    CertificateExpiring,
    /// The endpoint answers the probe with a 5xx.
    EndpointFailing,
    /// The endpoint is up but answers the signed ping with a 4xx.
    EndpointRefusesPing,
    /// The probe reached the endpoint.
    EndpointHealthy,
    /// Cloud and Post Webhooks keep no delivery history and no probe is set.
    NotReportedByBitbucket,

    // ---------------------------------------------------------------- Events only
    /// A signing Secret was generated (`secretRef.generate`).
    SecretGenerated,
    /// A requested test delivery reached the endpoint.
    TestDelivered,
    /// A requested test delivery failed.
    TestDeliveryFailed,
    /// The spec turns TLS verification of deliveries off.
    CertificateVerificationSkipped,
    /// The Webhook was released by the force-orphan annotation, the hook left.
    ForceOrphaned,
    /// The Webhook was deleted and its hook left (deletionPolicy Orphan, ObserveOnly).
    Orphaned,
    /// A Webhook that never owned the hook (a Conflict loser) was deleted; the hook stays.
    NotOwned,
    /// The hook was deleted with its Webhook.
    Deleted,
    /// The hook could not be deleted; retried with backoff.
    DeleteFailed,

    // ---------------------------------------------------------------- WebhookSets
    /// Some of a WebhookSet's Webhooks are missing or not Ready yet.
    WebhooksNotReady,

    // ---------------------------------------------------------------- connections
    /// Bitbucket accepted the connection's credential.
    Verified,
    /// Bitbucket refused the identity call (which some tokens may not make) and no
    /// Webhook uses the connection yet to prove it: usable, not yet proven.
    Unverified,
    /// A connection being deleted waits for the Webhooks that use it.
    InUse,
    /// Event: Bitbucket answers the connection's requests again after an outage.
    BitbucketRecovered,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Needs a person (a spec, credential, permission or repository to fix): kstatus
    /// reports it as Stalled rather than as work in progress.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Reason::InvalidSpec
                | Reason::Forbidden
                | Reason::Unauthorized
                | Reason::Conflict
                | Reason::NotAllowed
                | Reason::RepositoryNotFound
                | Reason::Unsupported
        )
    }

    /// Reported by policy (driftPolicy Report, ObserveOnly): not in flight, not stalled.
    pub fn is_reported(self) -> bool {
        matches!(self, Reason::Drifted | Reason::NotFound)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_reason_is_in_the_readme_troubleshooting_section() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Troubleshooting")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a Troubleshooting section");
        let missing: Vec<&str> = Reason::iter()
            .map(Reason::as_str)
            .filter(|r| !section.contains(&format!("`{r}`")))
            .collect();
        assert!(missing.is_empty(), "undocumented reasons: {missing:?}");
    }

    #[test]
    fn names_round_trip() {
        for r in Reason::iter() {
            assert_eq!(r.as_str().parse::<Reason>().ok(), Some(r));
        }
    }
}
