//! The heart of the operator: a pure function from what the spec wants and what Bitbucket
//! has to the one thing to do. No I/O here, so "no duplicates" and "no needless writes"
//! are proven by the unit tests below.

use secrecy::{ExposeSecret, SecretString};

use crate::api::{AdoptionPolicy, DriftPolicy, ManagementPolicy};
use crate::bitbucket::{RemoteHook, SecretState};

/// The hook as the spec wants it (events sorted and unique).
#[derive(Clone, Debug)]
pub struct Desired {
    pub title: String,
    pub url: String,
    pub active: bool,
    pub events: Vec<String>,
    pub secret: Option<DesiredSecret>,
    pub skip_cert_verification: bool,
}

/// The signing secret and a version of it that is not derived from its value (the
/// Secret's uid and resourceVersion), so status can record which one was pushed.
#[derive(Clone, Debug)]
pub struct DesiredSecret {
    pub value: SecretString,
    pub version: String,
}

/// What the operator knows besides the spec.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// Every hook on the repository, from one list call.
    pub hooks: &'a [RemoteHook],
    /// `status.webhookId`.
    pub recorded_id: Option<&'a str>,
    /// `status.secretVersion`: the secret version last pushed.
    pub recorded_secret_version: Option<&'a str>,
    /// A create was started and its answer may never have been recorded.
    pub pending_create: bool,
    /// `metadata.generation` differs from `status.observedGeneration`: the spec changed.
    pub spec_changed: bool,
}

/// The policies of `spec`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policies {
    pub adoption: AdoptionPolicy,
    pub drift: DriftPolicy,
    pub management: ManagementPolicy,
}

/// A field of the hook that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Title,
    Url,
    Active,
    Events,
    Secret,
    SkipCertVerification,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Url => "url",
            Field::Active => "active",
            Field::Events => "events",
            Field::Secret => "secret",
            Field::SkipCertVerification => "skipCertVerification",
        }
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The hook equals the spec; `adopted` when it was found by URL, not by recorded id.
    InSync { id: String, adopted: bool },
    /// No hook is ours: create one.
    Create,
    /// Change these fields of the hook in place.
    Update {
        id: String,
        adopted: bool,
        fields: Vec<Field>,
    },
    /// Differences that policy forbids fixing (driftPolicy Report, ObserveOnly).
    Drifted { id: String, fields: Vec<Field> },
    /// No hook, and policy forbids creating one; `deleted` when the recorded one vanished.
    Missing { deleted: bool },
}

/// Fields where `hook` differs from `desired`.
pub fn diff(
    desired: &Desired,
    hook: &RemoteHook,
    recorded_secret_version: Option<&str>,
) -> Vec<Field> {
    let mut fields = Vec::new();
    if hook.title != desired.title {
        fields.push(Field::Title);
    }
    if hook.url != desired.url {
        fields.push(Field::Url);
    }
    if hook.active != desired.active {
        fields.push(Field::Active);
    }
    let mut events = hook.events.clone();
    events.sort();
    events.dedup();
    if events != desired.events {
        fields.push(Field::Events);
    }
    if secret_differs(
        desired.secret.as_ref(),
        &hook.secret,
        recorded_secret_version,
    ) {
        fields.push(Field::Secret);
    }
    if hook.skip_cert_verification != desired.skip_cert_verification {
        fields.push(Field::SkipCertVerification);
    }
    fields
}

fn secret_differs(
    desired: Option<&DesiredSecret>,
    remote: &SecretState,
    recorded_version: Option<&str>,
) -> bool {
    match (desired, remote) {
        (None, SecretState::Unset) => false,
        (None, SecretState::Set | SecretState::Known(_)) => true,
        (Some(_), SecretState::Unset) => true,
        // Data Center returns the secret: compare values.
        (Some(d), SecretState::Known(v)) => v.expose_secret() != d.value.expose_secret(),
        // Cloud only says one is set: compare with the version last pushed.
        (Some(d), SecretState::Set) => recorded_version != Some(d.version.as_str()),
    }
}

/// The hook this Webhook owns, if any: the recorded id, else (when policy or a pending
/// create allows) the oldest hook with the same URL.
fn find<'a>(
    desired: &Desired,
    observed: &Observed<'a>,
    policies: Policies,
) -> Option<(&'a RemoteHook, bool)> {
    if let Some(id) = observed.recorded_id
        && let Some(hook) = observed.hooks.iter().find(|h| h.id == id)
    {
        return Some((hook, false));
    }
    let may_adopt = policies.adoption == AdoptionPolicy::IfMatchingUrl || observed.pending_create;
    if !may_adopt {
        return None;
    }
    // Several hooks with our URL (made by hand): take one deterministically, touch none
    // of the others.
    observed
        .hooks
        .iter()
        .filter(|h| h.url == desired.url)
        .min_by(|a, b| id_order(&a.id, &b.id))
        .map(|h| (h, true))
}

/// Numeric ids (Data Center) in numeric order, uuids in text order.
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// The one thing to do.
pub fn plan(desired: &Desired, observed: &Observed<'_>, policies: Policies) -> Plan {
    let observe_only = policies.management == ManagementPolicy::ObserveOnly;
    match find(desired, observed, policies) {
        Some((hook, adopted)) => {
            // A version recorded for another hook says nothing about an adopted one.
            let version = if adopted {
                None
            } else {
                observed.recorded_secret_version
            };
            let fields = diff(desired, hook, version);
            let id = hook.id.clone();
            if fields.is_empty() {
                return Plan::InSync { id, adopted };
            }
            // Report leaves changes made in Bitbucket alone, but a changed spec is applied.
            let report_only =
                policies.drift == DriftPolicy::Report && !observed.spec_changed && !adopted;
            if observe_only || report_only {
                Plan::Drifted { id, fields }
            } else {
                Plan::Update {
                    id,
                    adopted,
                    fields,
                }
            }
        }
        None => {
            let deleted = observed.recorded_id.is_some();
            let report_only =
                policies.drift == DriftPolicy::Report && deleted && !observed.spec_changed;
            if observe_only || report_only {
                Plan::Missing { deleted }
            } else {
                Plan::Create
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            title: "CI".into(),
            url: "https://ci.example.com/hook".into(),
            active: true,
            events: vec!["pullrequest:created".into(), "repo:push".into()],
            secret: None,
            skip_cert_verification: false,
        }
    }

    fn hook(id: &str, url: &str) -> RemoteHook {
        RemoteHook {
            id: id.into(),
            title: "CI".into(),
            url: url.into(),
            active: true,
            events: vec!["repo:push".into(), "pullrequest:created".into()],
            secret: SecretState::Unset,
            skip_cert_verification: false,
            ..RemoteHook::default()
        }
    }

    fn secret(value: &str, version: &str) -> Option<DesiredSecret> {
        Some(DesiredSecret {
            value: value.to_owned().into(),
            version: version.into(),
        })
    }

    const URL: &str = "https://ci.example.com/hook";

    #[test]
    fn nothing_on_bitbucket_means_create() {
        let plan = plan(&desired(), &Observed::default(), Policies::default());
        assert_eq!(plan, Plan::Create);
    }

    #[test]
    fn the_recorded_hook_in_sync_means_no_write() {
        let hooks = [hook("{a}", URL)];
        let observed = Observed {
            hooks: &hooks,
            recorded_id: Some("{a}"),
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &observed, Policies::default()),
            Plan::InSync {
                id: "{a}".into(),
                adopted: false
            }
        );
    }

    #[test]
    fn event_order_and_duplicates_on_bitbucket_are_not_a_difference() {
        let mut h = hook("1", URL);
        h.events = vec![
            "repo:push".into(),
            "pullrequest:created".into(),
            "repo:push".into(),
        ];
        assert!(diff(&desired(), &h, None).is_empty());
    }

    #[test]
    fn each_field_change_is_an_update_in_place() {
        type Change = Box<dyn Fn(&mut RemoteHook)>;
        let cases: Vec<(Change, Field)> = vec![
            (Box::new(|h| h.title = "old".into()), Field::Title),
            (
                Box::new(|h| h.url = "https://old.example.com".into()),
                Field::Url,
            ),
            (Box::new(|h| h.active = false), Field::Active),
            (
                Box::new(|h| h.events = vec!["repo:push".into()]),
                Field::Events,
            ),
            (
                Box::new(|h| h.skip_cert_verification = true),
                Field::SkipCertVerification,
            ),
            (Box::new(|h| h.secret = SecretState::Set), Field::Secret),
        ];
        for (change, field) in cases {
            let mut h = hook("{a}", URL);
            change(&mut h);
            let hooks = [h];
            let observed = Observed {
                hooks: &hooks,
                recorded_id: Some("{a}"),
                ..Default::default()
            };
            assert_eq!(
                plan(&desired(), &observed, Policies::default()),
                Plan::Update {
                    id: "{a}".into(),
                    adopted: false,
                    fields: vec![field]
                },
                "{field:?}"
            );
        }
    }

    #[test]
    fn an_existing_hook_with_our_url_is_adopted_not_duplicated() {
        let hooks = [
            hook("{other}", "https://elsewhere.example.com"),
            hook("{b}", URL),
        ];
        let observed = Observed {
            hooks: &hooks,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &observed, Policies::default()),
            Plan::InSync {
                id: "{b}".into(),
                adopted: true
            }
        );
        let mut changed = desired();
        changed.title = "New".into();
        assert_eq!(
            plan(&changed, &observed, Policies::default()),
            Plan::Update {
                id: "{b}".into(),
                adopted: true,
                fields: vec![Field::Title]
            }
        );
    }

    #[test]
    fn adoption_never_creates_a_second_hook_unless_a_create_of_ours_is_pending() {
        let hooks = [hook("{b}", URL)];
        let never = Policies {
            adoption: AdoptionPolicy::Never,
            ..Default::default()
        };
        let observed = Observed {
            hooks: &hooks,
            ..Default::default()
        };
        assert_eq!(plan(&desired(), &observed, never), Plan::Create);
        // After a crash between Bitbucket's answer and the status write: the hook is ours.
        let pending = Observed {
            hooks: &hooks,
            pending_create: true,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &pending, never),
            Plan::InSync {
                id: "{b}".into(),
                adopted: true
            }
        );
    }

    #[test]
    fn several_hooks_with_our_url_adopt_the_oldest_only() {
        let hooks = [hook("12", URL), hook("9", URL), hook("10", URL)];
        let observed = Observed {
            hooks: &hooks,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &observed, Policies::default()),
            Plan::InSync {
                id: "9".into(),
                adopted: true
            }
        );
    }

    #[test]
    fn a_hook_deleted_behind_our_back_is_recreated_or_reported() {
        let hooks = [hook("{x}", "https://elsewhere.example.com")];
        let observed = Observed {
            hooks: &hooks,
            recorded_id: Some("{gone}"),
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &observed, Policies::default()),
            Plan::Create
        );
        let report = Policies {
            drift: DriftPolicy::Report,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &observed, report),
            Plan::Missing { deleted: true }
        );
        let observe = Policies {
            management: ManagementPolicy::ObserveOnly,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &observed, observe),
            Plan::Missing { deleted: true }
        );
    }

    #[test]
    fn drift_is_enforced_or_reported_but_a_spec_change_is_always_applied() {
        let mut h = hook("7", URL);
        h.active = false;
        let hooks = [h];
        let drifted = Observed {
            hooks: &hooks,
            recorded_id: Some("7"),
            ..Default::default()
        };
        let report = Policies {
            drift: DriftPolicy::Report,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &drifted, report),
            Plan::Drifted {
                id: "7".into(),
                fields: vec![Field::Active]
            }
        );
        assert!(matches!(
            plan(&desired(), &drifted, Policies::default()),
            Plan::Update { .. }
        ));
        let edited = Observed {
            spec_changed: true,
            ..drifted.clone()
        };
        assert!(matches!(
            plan(&desired(), &edited, report),
            Plan::Update { .. }
        ));
    }

    #[test]
    fn observe_only_never_plans_a_write() {
        let observe = Policies {
            management: ManagementPolicy::ObserveOnly,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &Observed::default(), observe),
            Plan::Missing { deleted: false }
        );
        let mut h = hook("7", URL);
        h.title = "x".into();
        let hooks = [h];
        let edited = Observed {
            hooks: &hooks,
            recorded_id: Some("7"),
            spec_changed: true,
            ..Default::default()
        };
        assert_eq!(
            plan(&desired(), &edited, observe),
            Plan::Drifted {
                id: "7".into(),
                fields: vec![Field::Title]
            }
        );
    }

    #[test]
    fn secrets_compare_by_value_where_known_and_by_version_where_write_only() {
        let mut with_secret = desired();
        with_secret.secret = secret("s1", "uid/5");
        let mut cloud = hook("{a}", URL);
        cloud.secret = SecretState::Set;
        assert!(
            diff(&with_secret, &cloud, Some("uid/5")).is_empty(),
            "same version"
        );
        assert_eq!(
            diff(&with_secret, &cloud, Some("uid/4")),
            vec![Field::Secret],
            "rotated"
        );
        assert_eq!(
            diff(&with_secret, &cloud, None),
            vec![Field::Secret],
            "unknown: push once"
        );
        let mut dc = hook("1", URL);
        dc.secret = SecretState::Known("s1".to_owned().into());
        assert!(diff(&with_secret, &dc, None).is_empty(), "same value");
        dc.secret = SecretState::Known("changed-in-bitbucket".to_owned().into());
        assert_eq!(
            diff(&with_secret, &dc, Some("uid/5")),
            vec![Field::Secret],
            "drift in the value"
        );
        assert_eq!(
            diff(&with_secret, &hook("1", URL), None),
            vec![Field::Secret],
            "missing"
        );
        assert_eq!(
            diff(&desired(), &dc, None),
            vec![Field::Secret],
            "to be removed"
        );
    }

    #[test]
    fn an_adopted_hook_ignores_the_recorded_secret_version() {
        let mut with_secret = desired();
        with_secret.secret = secret("s1", "uid/5");
        let mut h = hook("{b}", URL);
        h.secret = SecretState::Set;
        let hooks = [h];
        let observed = Observed {
            hooks: &hooks,
            recorded_secret_version: Some("uid/5"),
            ..Default::default()
        };
        assert_eq!(
            plan(&with_secret, &observed, Policies::default()),
            Plan::Update {
                id: "{b}".into(),
                adopted: true,
                fields: vec![Field::Secret]
            }
        );
    }
}
