//! The webhook event names of each backend, and what one backend's name is called in
//! another (for "did you mean" hints). Source: docs/bitbucket-api.md and the Cloud
//! OpenAPI document's `hook_event` enum.

/// The three webhook APIs. Data Center's built-in webhooks and the Post Webhooks app run
/// on the same server but have different event vocabularies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Cloud,
    DataCenter,
    PostWebhooks,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Cloud, Backend::DataCenter, Backend::PostWebhooks];

    /// The name users write in `BitbucketConnection.spec.flavor`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cloud => "Cloud",
            Backend::DataCenter => "DataCenter",
            Backend::PostWebhooks => "PostWebhooks",
        }
    }
}

/// Bitbucket Cloud repository webhook events (29).
pub const CLOUD_EVENTS: &[&str] = &[
    "issue:comment_created",
    "issue:created",
    "issue:updated",
    "pipeline:span_created",
    "project:updated",
    "pullrequest:approved",
    "pullrequest:changes_request_created",
    "pullrequest:changes_request_removed",
    "pullrequest:comment_created",
    "pullrequest:comment_deleted",
    "pullrequest:comment_reopened",
    "pullrequest:comment_resolved",
    "pullrequest:comment_updated",
    "pullrequest:created",
    "pullrequest:fulfilled",
    "pullrequest:push",
    "pullrequest:rejected",
    "pullrequest:unapproved",
    "pullrequest:updated",
    "repo:commit_comment_created",
    "repo:commit_status_created",
    "repo:commit_status_updated",
    "repo:created",
    "repo:deleted",
    "repo:fork",
    "repo:imported",
    "repo:push",
    "repo:transfer",
    "repo:updated",
];

/// The Cloud scope a hook subscribing to `event` needs besides `webhook`, by the event's
/// family. Source: the Cloud OpenAPI text for `POST /repositories/{workspace}/{repo_slug}/hooks`:
/// "this call requires the webhook scope, as well as any scope that applies to the events
/// that the webhook subscribes to" (its example: `webhook`, `repository` and `issue` for
/// `repo:push` and `issue:created`).
pub fn cloud_event_scope(event: &str) -> Option<&'static str> {
    match event.split_once(':')?.0 {
        "repo" => Some("repository"),
        "pullrequest" => Some("pullrequest"),
        "issue" => Some("issue"),
        "project" => Some("project"),
        "pipeline" => Some("pipeline"),
        _ => None,
    }
}

/// Bitbucket Data Center built-in webhook events (22). No endpoint lists them.
pub const DATA_CENTER_EVENTS: &[&str] = &[
    "repo:refs_changed",
    "repo:modified",
    "repo:forked",
    "repo:comment:added",
    "repo:comment:edited",
    "repo:comment:deleted",
    "repo:secret_detected",
    "mirror:repo_synchronized",
    "pr:opened",
    "pr:from_ref_updated",
    "pr:modified",
    "pr:merged",
    "pr:declined",
    "pr:deleted",
    "pr:reviewer:updated",
    "pr:reviewer:approved",
    "pr:reviewer:unapproved",
    "pr:reviewer:needs_work",
    "pr:comment:added",
    "pr:comment:edited",
    "pr:comment:deleted",
    "project:modified",
];

/// Post Webhooks for Bitbucket event types and the `X-Event-Key` the app sends for each.
pub const POST_WEBHOOKS_EVENTS: &[(&str, &str)] = &[
    ("ABSTRACT_REPOSITORY_REFS_CHANGED", "repo:push"),
    ("BRANCH_CREATED", "repo:push"),
    ("BRANCH_DELETED", "repo:push"),
    ("TAG_CREATED", "repo:push"),
    ("REPOSITORY_MIRROR_SYNCHRONIZED", "repo:push"),
    ("PULL_REQUEST_OPENED", "pullrequest:created"),
    ("PULL_REQUEST_UPDATED", "pullrequest:updated"),
    ("PULL_REQUEST_RESCOPED", "pullrequest:updated"),
    ("PULL_REQUEST_REOPENED", "pullrequest:updated"),
    ("PULL_REQUEST_MERGED", "pullrequest:fulfilled"),
    ("PULL_REQUEST_DECLINED", "pullrequest:rejected"),
    ("PULL_REQUEST_COMMENT", "pullrequest:comment"),
    ("PULL_REQUEST_CANCELABLE_COMMENT", "pullrequest:comment"),
    ("PULL_REQUEST_COMMENT_ACTIVITY", "pullrequest:comment"),
    ("PULL_REQUEST_DELETED", "pullrequest:deleted"),
    ("BUILD_STATUS_SET", "build:status"),
];

/// The Post Webhooks app's v1 API (before app 3.5.5) has one boolean per trigger instead
/// of event types: each trigger and the v2 event type it stands for. Source: the vendor's
/// help pages ("Version 1") and Jenkins' Bitbucket Branch Source plugin's v1 manager.
pub const POST_WEBHOOKS_V1_TRIGGERS: &[(&str, &str)] = &[
    ("repoPush", "ABSTRACT_REPOSITORY_REFS_CHANGED"),
    ("branchCreated", "BRANCH_CREATED"),
    ("branchDeleted", "BRANCH_DELETED"),
    ("tagCreated", "TAG_CREATED"),
    ("repoMirrorSynced", "REPOSITORY_MIRROR_SYNCHRONIZED"),
    ("prCreated", "PULL_REQUEST_OPENED"),
    ("prUpdated", "PULL_REQUEST_UPDATED"),
    ("prRescoped", "PULL_REQUEST_RESCOPED"),
    ("prReopened", "PULL_REQUEST_REOPENED"),
    ("prMerged", "PULL_REQUEST_MERGED"),
    ("prDeclined", "PULL_REQUEST_DECLINED"),
    ("prCommented", "PULL_REQUEST_COMMENT"),
    ("prDeleted", "PULL_REQUEST_DELETED"),
    ("buildStatus", "BUILD_STATUS_SET"),
];

/// The same happening under each backend's name: (Cloud, Data Center, Post Webhooks).
const EQUIVALENTS: &[Row] = &[
    (
        Some("repo:push"),
        Some("repo:refs_changed"),
        Some("ABSTRACT_REPOSITORY_REFS_CHANGED"),
    ),
    (
        Some("pullrequest:created"),
        Some("pr:opened"),
        Some("PULL_REQUEST_OPENED"),
    ),
    (
        Some("pullrequest:updated"),
        Some("pr:modified"),
        Some("PULL_REQUEST_UPDATED"),
    ),
    (
        Some("pullrequest:push"),
        Some("pr:from_ref_updated"),
        Some("PULL_REQUEST_RESCOPED"),
    ),
    (
        Some("pullrequest:fulfilled"),
        Some("pr:merged"),
        Some("PULL_REQUEST_MERGED"),
    ),
    (
        Some("pullrequest:rejected"),
        Some("pr:declined"),
        Some("PULL_REQUEST_DECLINED"),
    ),
    (None, Some("pr:deleted"), Some("PULL_REQUEST_DELETED")),
    (
        Some("pullrequest:approved"),
        Some("pr:reviewer:approved"),
        None,
    ),
    (
        Some("pullrequest:unapproved"),
        Some("pr:reviewer:unapproved"),
        None,
    ),
    (
        Some("pullrequest:changes_request_created"),
        Some("pr:reviewer:needs_work"),
        None,
    ),
    (
        Some("pullrequest:comment_created"),
        Some("pr:comment:added"),
        Some("PULL_REQUEST_COMMENT"),
    ),
    (
        Some("pullrequest:comment_updated"),
        Some("pr:comment:edited"),
        None,
    ),
    (
        Some("pullrequest:comment_deleted"),
        Some("pr:comment:deleted"),
        None,
    ),
    (
        Some("repo:commit_comment_created"),
        Some("repo:comment:added"),
        None,
    ),
    (Some("repo:updated"), Some("repo:modified"), None),
    (Some("repo:fork"), Some("repo:forked"), None),
    (
        Some("repo:commit_status_created"),
        None,
        Some("BUILD_STATUS_SET"),
    ),
    (
        None,
        Some("mirror:repo_synchronized"),
        Some("REPOSITORY_MIRROR_SYNCHRONIZED"),
    ),
    (Some("project:updated"), Some("project:modified"), None),
];

/// Every event name of a backend.
pub fn events(backend: Backend) -> Vec<&'static str> {
    match backend {
        Backend::Cloud => CLOUD_EVENTS.to_vec(),
        Backend::DataCenter => DATA_CENTER_EVENTS.to_vec(),
        Backend::PostWebhooks => POST_WEBHOOKS_EVENTS.iter().map(|(e, _)| *e).collect(),
    }
}

/// The events a Webhook without `spec.events` subscribes to: the backend's push event.
pub fn default_events(backend: Backend) -> Vec<String> {
    let push = match backend {
        Backend::Cloud => "repo:push",
        Backend::DataCenter => "repo:refs_changed",
        Backend::PostWebhooks => "ABSTRACT_REPOSITORY_REFS_CHANGED",
    };
    vec![push.to_owned()]
}

/// The `X-Event-Key` header Post Webhooks sends for one of its event types.
pub fn post_webhooks_event_key(event_type: &str) -> Option<&'static str> {
    POST_WEBHOOKS_EVENTS
        .iter()
        .find(|(e, _)| *e == event_type)
        .map(|(_, key)| *key)
}

/// The Post Webhooks event type that corresponds to a Data Center event, if any: the
/// app and the built-in webhooks fire on the same server happenings.
pub fn post_webhooks_type_for(data_center_event: &str) -> Option<&'static str> {
    EQUIVALENTS
        .iter()
        .find(|(_, dc, _)| *dc == Some(data_center_event))
        .and_then(|(_, _, pw)| *pw)
}

/// The Data Center event a Post Webhooks event type corresponds to, if any.
pub fn data_center_event_for(post_webhooks_type: &str) -> Option<&'static str> {
    EQUIVALENTS
        .iter()
        .find(|(_, _, pw)| *pw == Some(post_webhooks_type))
        .and_then(|(_, dc, _)| *dc)
}

/// `event` of backend `from` under backend `to`'s name, when `to` has the same happening.
/// Post Webhooks' branch and tag events, which the app itself sends as `repo:push`, are
/// Cloud's `repo:push` (a Cloud push reports created and deleted branches and tags).
pub fn translate(from: Backend, to: Backend, event: &str) -> Option<&'static str> {
    if from == to {
        return events(to).into_iter().find(|e| *e == event);
    }
    let column = |b: Backend, row: &Row| match b {
        Backend::Cloud => row.0,
        Backend::DataCenter => row.1,
        Backend::PostWebhooks => row.2,
    };
    let direct = EQUIVALENTS
        .iter()
        .find(|row| column(from, row) == Some(event))
        .and_then(|row| column(to, row));
    match (direct, from, to) {
        (Some(found), _, _) => Some(found),
        (None, Backend::PostWebhooks, Backend::Cloud) => {
            post_webhooks_event_key(event).filter(|key| *key == "repo:push")
        }
        _ => None,
    }
}

type Row = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// What [`check_event`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventCheck {
    Known,
    /// The name belongs to another backend; `suggestion` is this backend's name for it.
    OtherBackend {
        backend: Backend,
        suggestion: Option<&'static str>,
    },
    /// Unknown everywhere; `suggestion` is the closest name of this backend.
    Unknown {
        suggestion: Option<&'static str>,
    },
}

impl EventCheck {
    /// A sentence for a condition message, or None when the event is fine.
    pub fn message(&self, event: &str, backend: Backend) -> Option<String> {
        let hint = |s: &Option<&str>| match s {
            Some(s) => format!(" (did you mean {s}?)"),
            None => String::new(),
        };
        match self {
            EventCheck::Known => None,
            EventCheck::OtherBackend {
                backend: other,
                suggestion,
            } => Some(format!(
                "event {event} is a {} event, not a {} one{}",
                other.name(),
                backend.name(),
                match suggestion {
                    Some(_) => hint(suggestion),
                    None => format!(" ({} has no equivalent)", backend.name()),
                }
            )),
            EventCheck::Unknown { suggestion } => Some(format!(
                "event {event} is not a {} event{}",
                backend.name(),
                hint(suggestion)
            )),
        }
    }
}

/// Whether `event` is one of `backend`'s events, and if not, what was probably meant.
pub fn check_event(backend: Backend, event: &str) -> EventCheck {
    if events(backend).contains(&event) {
        return EventCheck::Known;
    }
    let column = |b: Backend,
                  row: &(
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    )| match b {
        Backend::Cloud => row.0,
        Backend::DataCenter => row.1,
        Backend::PostWebhooks => row.2,
    };
    for other in Backend::ALL.into_iter().filter(|b| *b != backend) {
        if events(other).contains(&event) {
            let suggestion = EQUIVALENTS
                .iter()
                .find(|row| column(other, row) == Some(event))
                .and_then(|row| column(backend, row));
            return EventCheck::OtherBackend {
                backend: other,
                suggestion,
            };
        }
    }
    let suggestion = events(backend)
        .into_iter()
        .map(|candidate| (strsim::levenshtein(candidate, event), candidate))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, candidate)| candidate);
    EventCheck::Unknown { suggestion }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_translate_where_the_other_backend_has_them() {
        use Backend::*;
        assert_eq!(
            translate(DataCenter, Cloud, "repo:refs_changed"),
            Some("repo:push")
        );
        assert_eq!(
            translate(DataCenter, Cloud, "pr:opened"),
            Some("pullrequest:created")
        );
        assert_eq!(translate(DataCenter, Cloud, "pr:deleted"), None);
        assert_eq!(translate(DataCenter, Cloud, "repo:secret_detected"), None);
        assert_eq!(
            translate(PostWebhooks, Cloud, "PULL_REQUEST_MERGED"),
            Some("pullrequest:fulfilled")
        );
        assert_eq!(
            translate(PostWebhooks, Cloud, "BRANCH_CREATED"),
            Some("repo:push")
        );
        assert_eq!(translate(PostWebhooks, Cloud, "PULL_REQUEST_DELETED"), None);
        assert_eq!(translate(Cloud, Cloud, "repo:push"), Some("repo:push"));
        assert_eq!(translate(Cloud, Cloud, "repo:nope"), None);
        for event in DATA_CENTER_EVENTS {
            if let Some(cloud) = translate(DataCenter, Cloud, event) {
                assert!(CLOUD_EVENTS.contains(&cloud), "{event} -> {cloud}");
            }
        }
    }

    #[test]
    fn catalogue_sizes_match_the_documentation() {
        assert_eq!(events(Backend::Cloud).len(), 29);
        assert_eq!(events(Backend::DataCenter).len(), 22);
        assert_eq!(events(Backend::PostWebhooks).len(), 16);
    }

    #[test]
    fn every_equivalent_is_in_its_catalogue() {
        for (cloud, dc, pw) in EQUIVALENTS {
            for (backend, name) in [
                (Backend::Cloud, cloud),
                (Backend::DataCenter, dc),
                (Backend::PostWebhooks, pw),
            ] {
                if let Some(name) = name {
                    assert!(
                        events(backend).contains(name),
                        "{name} is not a {backend:?} event"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cloud_event_on_data_center_names_the_data_center_event() {
        let check = check_event(Backend::DataCenter, "repo:push");
        assert_eq!(
            check,
            EventCheck::OtherBackend {
                backend: Backend::Cloud,
                suggestion: Some("repo:refs_changed")
            }
        );
        assert_eq!(
            check.message("repo:push", Backend::DataCenter).as_deref(),
            Some(
                "event repo:push is a Cloud event, not a DataCenter one (did you mean repo:refs_changed?)"
            )
        );
    }

    #[test]
    fn each_direction_of_the_hint_works() {
        let suggestion = |b, e| match check_event(b, e) {
            EventCheck::OtherBackend { suggestion, .. } => suggestion,
            other => panic!("{e} on {b:?}: {other:?}"),
        };
        assert_eq!(
            suggestion(Backend::Cloud, "pr:opened"),
            Some("pullrequest:created")
        );
        assert_eq!(
            suggestion(Backend::PostWebhooks, "repo:refs_changed"),
            Some("ABSTRACT_REPOSITORY_REFS_CHANGED")
        );
        assert_eq!(
            suggestion(Backend::DataCenter, "PULL_REQUEST_MERGED"),
            Some("pr:merged")
        );
        assert_eq!(
            suggestion(Backend::PostWebhooks, "pr:reviewer:approved"),
            None
        );
    }

    #[test]
    fn typos_get_the_closest_name() {
        assert_eq!(
            check_event(Backend::Cloud, "repo:pushh"),
            EventCheck::Unknown {
                suggestion: Some("repo:push")
            }
        );
        assert_eq!(
            check_event(Backend::Cloud, "nothing:like:it"),
            EventCheck::Unknown { suggestion: None }
        );
        assert_eq!(check_event(Backend::Cloud, "repo:push"), EventCheck::Known);
    }

    #[test]
    fn post_webhooks_keys_and_mappings() {
        assert_eq!(post_webhooks_event_key("BRANCH_CREATED"), Some("repo:push"));
        assert_eq!(
            post_webhooks_event_key("PULL_REQUEST_MERGED"),
            Some("pullrequest:fulfilled")
        );
        assert_eq!(
            post_webhooks_type_for("pr:opened"),
            Some("PULL_REQUEST_OPENED")
        );
        assert_eq!(
            data_center_event_for("ABSTRACT_REPOSITORY_REFS_CHANGED"),
            Some("repo:refs_changed")
        );
    }
}
