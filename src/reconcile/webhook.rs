//! The Webhook reconciler: dereference (connection, Secrets) -> validate (events per
//! flavor) -> observe (one list per repository) -> plan -> apply -> status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::{DeserializeGuard, Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Status};
use super::connection::{View, secret_value};
use super::plan::{Desired, DesiredSecret, Field, Observed, Plan, Policies, plan};
use super::schedule::until_next_slot;
use super::{Context, Error, object_key};
use crate::api::{
    BitbucketConnection, ClusterBitbucketConnection, ConnectionKind, DeletionPolicy,
    DeliveryHealth, DeliveryStatus, FIELD_MANAGER, FINALIZER, FORCE_ORPHAN_ANNOTATION, Flavor,
    GENERATED_LABEL, ManagementPolicy, PENDING_CREATE_ANNOTATION, TEST_REQUESTED_ANNOTATION,
    Webhook, WebhookStatus,
};
use crate::bitbucket::{
    self, Deleted, DeliveryStats, HookSpec, RemoteHook, RepoRef, SecretChange, WebhookBackend,
};
use crate::health::{Assessment, Inputs};

/// How old a cached list may be and still decide a create.
const RECENT_LIST: Duration = Duration::from_secs(10);

/// What a successful sync did.
#[derive(Debug)]
enum Done {
    InSync,
    Created,
    Adopted,
    Updated(Vec<Field>),
    Drifted(Vec<Field>),
    Missing { deleted: bool },
}

#[derive(Debug)]
struct Synced {
    id: Option<String>,
    done: Done,
    repository: RepoRef,
    page: String,
    flavor: Flavor,
    secret_version: Option<String>,
    backend: Arc<dyn WebhookBackend>,
    secret: Option<secrecy::SecretString>,
    /// The Webhook's probe, else the connection's.
    probe: Option<crate::api::ProbeSpec>,
    allow_private_targets: bool,
    /// Data Center: the hook's delivery statistics from this reconcile's listing, when a
    /// health poll was due (None: not polled now).
    stats: Option<DeliveryStats>,
}

/// Entry point for the controller.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<Webhook>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let webhook = match &guard.0 {
        Ok(w) => Arc::new(w.clone()),
        Err(invalid) => {
            // One malformed object must not stop the others: say so and wait for a fix.
            let name = invalid.metadata.name.clone().unwrap_or_default();
            tracing::warn!(webhook = %name, error = %invalid.error, "cannot read a Webhook");
            return Ok(Action::await_change());
        }
    };
    let namespace = webhook.namespace().unwrap_or_default();
    let api: Api<Webhook> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, webhook, |event| async {
        match event {
            FinalizerEvent::Apply(w) => apply(w, &api, &ctx).await,
            FinalizerEvent::Cleanup(w) => cleanup(w, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Requeue after an error that escaped the status (cleanup, Kubernetes API failures).
pub fn error_policy(
    guard: Arc<DeserializeGuard<Webhook>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = match &guard.0 {
        Ok(w) => object_key(w),
        Err(invalid) => invalid.metadata.name.clone().unwrap_or_default(),
    };
    tracing::warn!(webhook = %key, reason = error.reason(), error = %error, "reconcile failed");
    Action::requeue(super::requeue_after(&ctx, &key, error))
}

async fn publish(
    ctx: &Context,
    w: &Webhook,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &w.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

// ------------------------------------------------------------------ dereference

/// The connection a Webhook references, if it may use it.
async fn resolve_connection(w: &Webhook, ctx: &Context) -> Result<View, Error> {
    let namespace = w.namespace().unwrap_or_default();
    let name = &w.spec.connection_ref.name;
    match w.spec.connection_ref.kind {
        ConnectionKind::BitbucketConnection => {
            let api = Api::<BitbucketConnection>::namespaced(ctx.client.clone(), &namespace);
            let c = api
                .get_opt(name)
                .await?
                .ok_or_else(|| Error::ConnectionNotFound {
                    kind: "BitbucketConnection",
                    name: format!("{namespace}/{name}"),
                })?;
            Ok(View::namespaced(&c))
        }
        ConnectionKind::ClusterBitbucketConnection => {
            if !ctx.config.cluster_connections {
                return Err(Error::NotAllowed(
                    "this operator does not serve ClusterBitbucketConnections (it watches one namespace); use a BitbucketConnection".to_owned(),
                ));
            }
            let api = Api::<ClusterBitbucketConnection>::all(ctx.client.clone());
            let c = api
                .get_opt(name)
                .await?
                .ok_or_else(|| Error::ConnectionNotFound {
                    kind: "ClusterBitbucketConnection",
                    name: name.clone(),
                })?;
            allowed(&c, &namespace, &w.spec.repository, ctx).await?;
            Ok(View::cluster(&c, &ctx.config.cluster_secret_namespace))
        }
    }
}

/// A cluster connection serves only the namespaces and repositories it allows.
async fn allowed(
    c: &ClusterBitbucketConnection,
    namespace: &str,
    repository: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let name = c.name_any();
    let Some(selector) = &c.spec.allowed_namespaces else {
        return Err(Error::NotAllowed(format!(
            "ClusterBitbucketConnection {name} allows no namespace (spec.allowedNamespaces is empty)"
        )));
    };
    let selector = Selector::try_from(selector.clone()).map_err(|e| {
        Error::NotAllowed(format!(
            "ClusterBitbucketConnection {name} has an invalid allowedNamespaces: {e}"
        ))
    })?;
    let labels = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    if !selector.matches(&labels) {
        return Err(Error::NotAllowed(format!(
            "ClusterBitbucketConnection {name} does not allow namespace {namespace} (allowedNamespaces: {selector})"
        )));
    }
    if let Some(patterns) = &c.spec.allowed_repositories {
        let options = glob::MatchOptions {
            case_sensitive: false,
            ..Default::default()
        };
        let ok = patterns
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches_with(repository, options)));
        if !ok {
            return Err(Error::NotAllowed(format!(
                "ClusterBitbucketConnection {name} does not allow repository {repository} (allowedRepositories: {})",
                patterns.join(", ")
            )));
        }
    }
    Ok(())
}

/// The signing secret, generating its Secret when asked to.
async fn desired_secret(w: &Webhook, ctx: &Context) -> Result<Option<DesiredSecret>, Error> {
    let Some(reference) = &w.spec.secret_ref else {
        return Ok(None);
    };
    let namespace = w.namespace().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    if reference.generate && api.get_opt(&reference.name).await?.is_none() {
        generate_secret(w, &api, &reference.name, &reference.key).await?;
        publish(
            ctx,
            w,
            EventType::Normal,
            "SecretGenerated",
            "GenerateSecret",
            format!(
                "created Secret {} with a random signing secret in key {}",
                reference.name, reference.key
            ),
        )
        .await;
    }
    let (value, version) =
        secret_value(&ctx.client, &namespace, &reference.name, &reference.key).await?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(Error::SecretInvalid(format!(
            "Secret {namespace}/{} key \"{}\" is empty",
            reference.name, reference.key
        )));
    }
    if value.chars().count() > 128 {
        return Err(Error::InvalidSpec(format!(
            "the signing secret in Secret {}/{} is longer than the 128 characters Bitbucket accepts",
            namespace, reference.name
        )));
    }
    Ok(Some(DesiredSecret {
        value: value.into(),
        version,
    }))
}

async fn generate_secret(
    w: &Webhook,
    api: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let bytes: [u8; 32] = rand::random();
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([(GENERATED_LABEL.to_owned(), w.name_any())].into()),
            owner_references: w.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        data: Some([(key.to_owned(), ByteString(value.into_bytes()))].into()),
        ..Default::default()
    };
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Created meanwhile (another reconcile, or a person): use that one.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------------------------ validate

/// Events per flavor, sorted and unique; a name of another flavor gets a hint.
fn validate_events(flavor: Flavor, events: Option<&Vec<String>>) -> Result<Vec<String>, Error> {
    let backend = backend_of(flavor);
    let mut events = match events {
        Some(e) => e.clone(),
        None => bitbucket_events::default_events(backend),
    };
    let problems: Vec<String> = events
        .iter()
        .filter_map(|e| bitbucket_events::check_event(backend, e).message(e, backend))
        .collect();
    if !problems.is_empty() {
        return Err(Error::InvalidSpec(problems.join("; ")));
    }
    events.sort();
    events.dedup();
    Ok(events)
}

pub fn backend_of(flavor: Flavor) -> bitbucket_events::Backend {
    match flavor {
        Flavor::Cloud => bitbucket_events::Backend::Cloud,
        Flavor::DataCenter => bitbucket_events::Backend::DataCenter,
        Flavor::PostWebhooks => bitbucket_events::Backend::PostWebhooks,
    }
}

/// Two Webhooks claiming one repository and URL through one connection (in any watched
/// namespace): the older one wins, the other is refused.
fn conflict(w: &Webhook, ctx: &Context) -> Result<(), Error> {
    match ctx.claims.holder(w) {
        Some(holder) => Err(Error::Conflict(holder)),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------ sync

fn hook_spec(desired: &Desired, secret: SecretChange) -> HookSpec {
    HookSpec {
        title: desired.title.clone(),
        url: desired.url.clone(),
        active: desired.active,
        events: desired.events.clone(),
        secret,
        skip_cert_verification: desired.skip_cert_verification,
    }
}

fn secret_change(desired: &Desired, fields: &[Field]) -> SecretChange {
    match (&desired.secret, fields.contains(&Field::Secret)) {
        (_, false) => SecretChange::Keep,
        (Some(s), true) => SecretChange::Set(s.value.clone()),
        (None, true) => SecretChange::Remove,
    }
}

fn list_key(view: &View, repo: &RepoRef) -> String {
    format!("{}|{}", view.key(), repo.to_string().to_ascii_lowercase())
}

fn repository_error(repo: &RepoRef, e: bitbucket::Error) -> Error {
    match e {
        bitbucket::Error::NotFound { message } => Error::RepositoryNotFound {
            repository: repo.to_string(),
            message,
        },
        other => Error::Bitbucket(other),
    }
}

async fn sync(w: &Webhook, api: &Api<Webhook>, ctx: &Context) -> Result<Synced, Error> {
    let namespace = w.namespace().unwrap_or_default();
    let view = resolve_connection(w, ctx).await?;
    view.readiness()?;
    let flavor = view.spec.flavor;
    let repo = RepoRef::parse(&w.spec.repository).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "repository {:?} is not owner/slug",
            w.spec.repository
        ))
    })?;
    let events = validate_events(flavor, w.spec.events.as_ref())?;
    if flavor == Flavor::PostWebhooks && w.spec.secret_ref.is_some() {
        return Err(Error::InvalidSpec(
            "Post Webhooks for Bitbucket does not sign deliveries: remove spec.secretRef"
                .to_owned(),
        ));
    }
    conflict(w, ctx)?;
    let backend = ctx
        .connections
        .backend(&ctx.client, &view, &ctx.config.retry, &ctx.metrics)
        .await?;
    let secret = desired_secret(w, ctx).await?;
    let desired = Desired {
        title: w
            .spec
            .title
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{}", w.name_any())),
        url: w.spec.url.clone(),
        active: w.spec.active,
        events,
        secret,
        skip_cert_verification: w.spec.skip_cert_verification,
    };
    let policies = Policies {
        adoption: w.spec.adoption,
        drift: w.spec.drift_policy,
        management: w.spec.management_policy,
    };
    let status = w.status.clone().unwrap_or_default();
    let pending = w.annotations().contains_key(PENDING_CREATE_ANNOTATION);
    let spec_changed = status.observed_generation != w.metadata.generation;
    // Data Center's statistics come with the repository's listing: when this Webhook's
    // health poll is due, the listing must be recent, and then it serves the drift check
    // too. The repository's Webhooks share the poll slot, so one listing serves them all.
    let poll = flavor == Flavor::DataCenter
        && (spec_changed || ctx.health.poll_due(&w.uid().unwrap_or_default()));
    // A listing made since the slot began serves the poll: however late the repository's
    // Webhooks come round (a busy API server), one listing per repository per slot.
    let max_age = if poll {
        since_slot(ctx.config.health_period, &resync_group(w, &repo))
    } else {
        Duration::MAX
    };
    let key = list_key(&view, &repo);
    let list = |max_age| {
        let backend = backend.clone();
        let repo = repo.clone();
        let key = key.clone();
        async move {
            ctx.lists
                .get(&key, max_age, || {
                    let repo = repo.clone();
                    async move { backend.list_hooks(&repo).await }
                })
                .await
                .map_err(|e| repository_error(&repo, e))
        }
    };
    let decide = |hooks: &[RemoteHook]| {
        let observed = Observed {
            hooks,
            recorded_id: status.webhook_id.as_deref(),
            recorded_secret_version: status.secret_version.as_deref(),
            pending_create: pending,
            spec_changed,
        };
        plan(&desired, &observed, policies)
    };
    let (mut hooks, age) = list(max_age).await?;
    let mut decision = decide(&hooks);
    if decision == Plan::Create && (age > RECENT_LIST || pending) {
        // Do not create from an old list, nor when a create of ours may have happened
        // (pending mark): look once more right before. A list of the last seconds (which
        // the operator's own creates keep current) is good enough otherwise, and not
        // re-listing then keeps a burst of creates from spending the budget on lists.
        hooks = list(Duration::ZERO).await?.0;
        decision = decide(&hooks);
    }
    let listed = |id: &str| hooks.iter().find(|h| h.id == id);
    // A hook the listing carries no statistics for has none to report yet.
    let stats_of =
        |id: &str| poll.then(|| listed(id).and_then(|h| h.stats.clone()).unwrap_or_default());
    let page = backend.webhooks_page(&repo);
    let secret_version = desired.secret.as_ref().map(|s| s.version.clone());
    let probe = w.spec.probe.clone().or_else(|| view.spec.probe.clone());
    let done = |id: Option<String>, done: Done, secret_version: Option<String>| Synced {
        stats: id.as_deref().and_then(stats_of),
        id,
        done,
        repository: repo.clone(),
        page: page.clone(),
        flavor,
        secret_version,
        backend: backend.clone(),
        secret: desired.secret.as_ref().map(|s| s.value.clone()),
        probe: probe.clone(),
        allow_private_targets: ctx.connections.allow_private_targets(&view),
    };
    Ok(match decision {
        Plan::InSync { id, adopted } => done(
            Some(id),
            if adopted { Done::Adopted } else { Done::InSync },
            secret_version,
        ),
        Plan::Drifted { id, fields } => done(
            Some(id),
            Done::Drifted(fields),
            status.secret_version.clone(),
        ),
        Plan::Missing { deleted } => done(
            None,
            Done::Missing { deleted },
            status.secret_version.clone(),
        ),
        Plan::Update {
            id,
            adopted,
            fields,
        } => {
            let spec = hook_spec(&desired, secret_change(&desired, &fields));
            let current = listed(&id).ok_or_else(|| {
                Error::Bitbucket(bitbucket::Error::Unexpected {
                    message: format!("hook {id} is not in the listing it was planned from"),
                })
            })?;
            let hook = backend.update_hook(&repo, current, &spec).await?;
            ctx.lists.upsert(&key, hook.clone()).await;
            let done_kind = if adopted {
                Done::Adopted
            } else {
                Done::Updated(fields)
            };
            done(Some(hook.id), done_kind, secret_version)
        }
        Plan::Create => {
            mark_pending(api, w, Some(&desired.url)).await?;
            let secret = desired
                .secret
                .as_ref()
                .map_or(SecretChange::Keep, |s| SecretChange::Set(s.value.clone()));
            let hook = match create(&*backend, &repo, &hook_spec(&desired, secret)).await {
                Ok(hook) => hook,
                // Refused before Bitbucket acted (a spent budget, a 429): nothing was
                // created, so the mark goes; otherwise the next try would re-list first.
                Err(e @ Error::Bitbucket(bitbucket::Error::RateLimited { .. })) => {
                    mark_pending(api, w, None).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            ctx.lists.upsert(&key, hook.clone()).await;
            done(Some(hook.id), Done::Created, secret_version)
        }
    })
}

async fn create(
    backend: &dyn WebhookBackend,
    repo: &RepoRef,
    spec: &HookSpec,
) -> Result<RemoteHook, Error> {
    backend
        .create_hook(repo, spec)
        .await
        .map_err(|e| repository_error(repo, e))
}

/// Sets (before a create) or clears (once the id is in status) the pending-create mark:
/// after a crash in between, the hook with this URL is known to be ours.
async fn mark_pending(api: &Api<Webhook>, w: &Webhook, url: Option<&str>) -> Result<(), Error> {
    let patch = json!({ "metadata": { "annotations": { PENDING_CREATE_ANNOTATION: url } } });
    api.patch(
        &w.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ status

fn synced_condition(result: &Result<Synced, Error>, w: &Webhook) -> (Status, &'static str, String) {
    let policy_note = match w.spec.management_policy {
        ManagementPolicy::ObserveOnly => {
            "managementPolicy ObserveOnly: nothing is written to Bitbucket"
        }
        ManagementPolicy::Manage => "driftPolicy Report: the change is reported, not undone",
    };
    let list = |fields: &[Field]| {
        fields
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match result {
        Ok(s) => {
            let id = s.id.as_deref().unwrap_or("");
            let repo = &s.repository;
            match &s.done {
                Done::InSync => (
                    Status::True,
                    "InSync",
                    format!("hook {id} on {repo} matches the spec"),
                ),
                Done::Created => (
                    Status::True,
                    "Created",
                    format!("created hook {id} on {repo}"),
                ),
                Done::Adopted => (
                    Status::True,
                    "Adopted",
                    format!("adopted the existing hook {id} on {repo}, which has the same URL"),
                ),
                Done::Updated(fields) => (
                    Status::True,
                    "Updated",
                    format!("updated {} of hook {id} on {repo}", list(fields)),
                ),
                Done::Drifted(fields) => (
                    Status::False,
                    "Drifted",
                    format!(
                        "hook {id} on {repo} differs from the spec in {}; {policy_note}",
                        list(fields)
                    ),
                ),
                Done::Missing { deleted: true } => (
                    Status::False,
                    "Drifted",
                    format!(
                        "hook {} was deleted in Bitbucket; {policy_note}",
                        w.status
                            .as_ref()
                            .and_then(|s| s.webhook_id.as_deref())
                            .unwrap_or("")
                    ),
                ),
                Done::Missing { deleted: false } => (
                    Status::False,
                    "NotFound",
                    format!("no hook with this URL exists on {repo}; {policy_note}"),
                ),
            }
        }
        Err(e) => (Status::False, e.reason(), e.to_string()),
    }
}

fn delivering_condition(
    result: &Result<Synced, Error>,
    health: Option<&Assessment>,
) -> (Status, &'static str, String) {
    match (result, health) {
        (Ok(_), Some(a)) => {
            let status = match a.verdict.delivering {
                Some(true) => Status::True,
                Some(false) => Status::False,
                None => Status::Unknown,
            };
            (status, a.verdict.reason, a.verdict.message.clone())
        }
        (Ok(_), None) => (
            Status::Unknown,
            "NoHook",
            "there is no hook to deliver".to_owned(),
        ),
        (Err(_), _) => (
            Status::Unknown,
            "NotSynced",
            "the hook is not in sync with the spec".to_owned(),
        ),
    }
}

fn new_status(
    w: &Webhook,
    result: &Result<Synced, Error>,
    health: Option<&Assessment>,
) -> WebhookStatus {
    let previous = w.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let generation = w.metadata.generation;
    let (s, reason, message) = synced_condition(result, w);
    let synced = conditions::condition(
        &previous.conditions,
        conditions::SYNCED,
        s,
        reason,
        message,
        generation,
        &now,
    );
    let (s, reason, message) = delivering_condition(result, health);
    let delivering = conditions::condition(
        &previous.conditions,
        conditions::DELIVERING,
        s,
        reason,
        message,
        generation,
        &now,
    );
    let (s, reason, message) = conditions::ready(&synced);
    let ready = conditions::condition(
        &previous.conditions,
        conditions::READY,
        s,
        &reason,
        message,
        generation,
        &now,
    );
    let mut all = vec![ready, synced.clone(), delivering];
    if let Some((type_, reason, message)) = conditions::progress(&synced) {
        all.push(conditions::condition(
            &previous.conditions,
            type_,
            Status::True,
            &reason,
            message,
            generation,
            &now,
        ));
    }
    let delivery = match health {
        Some(a) => a.delivery.clone(),
        None => previous.delivery.clone().unwrap_or(DeliveryStatus {
            health: DeliveryHealth::Unknown,
            ..Default::default()
        }),
    };
    match result {
        Ok(done) => WebhookStatus {
            observed_generation: generation,
            webhook_id: done.id.clone(),
            url: Some(done.page.clone()),
            last_sync_time: Some(now),
            secret_version: done.secret_version.clone(),
            delivery: Some(delivery),
            conditions: all,
        },
        Err(_) => WebhookStatus {
            observed_generation: generation,
            conditions: all,
            delivery: Some(delivery),
            ..previous
        },
    }
}

async fn apply(w: Arc<Webhook>, api: &Api<Webhook>, ctx: &Context) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let key = object_key(w.as_ref());
    let result = sync(&w, api, ctx).await;
    let health = match &result {
        Ok(synced) => assess(&w, synced, ctx).await,
        Err(_) => None,
    };
    let status = new_status(&w, &result, health.as_ref());
    let patch = json!({ "apiVersion": "bitbucket.hooks.dev/v1alpha1", "kind": "Webhook", "status": status });
    api.patch_status(
        &w.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if w.annotations().contains_key(PENDING_CREATE_ANNOTATION) && status.webhook_id.is_some() {
        mark_pending(api, &w, None).await?;
    }
    tell(ctx, &w, &result, &status, health.as_ref()).await;
    record(ctx, &w, &result, &status, started.elapsed());
    let group = match &result {
        Ok(s) => resync_group(&w, &s.repository),
        Err(_) => key.clone(),
    };
    let slot = until_next_slot(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
        ctx.config.resync_period,
        &group,
    );
    Ok(match &result {
        Ok(_) => {
            ctx.succeeded(&key);
            let next = health.and_then(|h| h.next).map_or(slot, |n| n.min(slot));
            Action::requeue(next.max(Duration::from_millis(500)))
        }
        Err(e) if e.transient() => Action::requeue(super::requeue_after(ctx, &key, e)),
        // Needs a change somewhere (watched), or a person in Bitbucket: look again at the
        // next resync.
        Err(_) => Action::requeue(slot.max(Duration::from_secs(1))),
    })
}

/// How long ago the current slot of `group` began.
fn since_slot(period: Duration, group: &str) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    period.saturating_sub(until_next_slot(now, period, group))
}

/// The Webhooks of one repository through one connection share resync and health slots.
fn resync_group(w: &Webhook, repository: &RepoRef) -> String {
    format!(
        "{:?}|{}|{}",
        w.spec.connection_ref.kind, w.spec.connection_ref.name, repository
    )
}

/// Metrics of one reconcile: its outcome and the Webhook's health and readiness.
fn record(
    ctx: &Context,
    w: &Webhook,
    result: &Result<Synced, Error>,
    status: &WebhookStatus,
    took: Duration,
) {
    let error = result.as_ref().err().map(Error::reason);
    ctx.metrics.reconciled("Webhook", took, error);
    let health = status
        .delivery
        .as_ref()
        .map_or(DeliveryHealth::Unknown, |d| d.health);
    let ready = conditions::find(&status.conditions, conditions::READY)
        .map_or("Unknown", |c| c.status.as_str());
    ctx.metrics.webhook(
        &w.uid().unwrap_or_default(),
        Some((&format!("{health:?}"), ready)),
    );
    let failed = |d: Option<&DeliveryStatus>| {
        d.map_or(0, |d| d.failures.unwrap_or(0) + d.errors.unwrap_or(0))
    };
    let before = failed(w.status.as_ref().and_then(|s| s.delivery.as_ref()));
    let after = failed(status.delivery.as_ref());
    if after > before {
        ctx.metrics
            .delivery_failures(u64::try_from(after - before).unwrap_or(0));
    }
}

/// Delivery health for a hook that exists.
async fn assess(w: &Webhook, synced: &Synced, ctx: &Context) -> Option<Assessment> {
    let id = synced.id.as_deref()?;
    let previous = w.status.as_ref();
    let uid = w.uid().unwrap_or_default();
    Some(
        crate::health::assess(Inputs {
            schedule: &ctx.health,
            key: &uid,
            flavor: synced.flavor,
            backend: synced.backend.as_ref(),
            repo: &synced.repository,
            hook_id: id,
            url: &w.spec.url,
            secret: synced.secret.as_ref(),
            skip_cert_verification: w.spec.skip_cert_verification,
            probe: synced.probe.as_ref(),
            allow_private_targets: synced.allow_private_targets,
            stats: synced.stats.as_ref(),
            group: &resync_group(w, &synced.repository),
            now: previous.and_then(|s| s.observed_generation) != w.metadata.generation,
            test_requested: w
                .annotations()
                .get(TEST_REQUESTED_ANNOTATION)
                .map(String::as_str),
            previous: previous.and_then(|s| s.delivery.as_ref()),
            poll_every: ctx.config.health_period,
        })
        .await,
    )
}

/// Events on actions and on changes of the Synced and Delivering conditions.
async fn tell(
    ctx: &Context,
    w: &Webhook,
    result: &Result<Synced, Error>,
    status: &WebhookStatus,
    health: Option<&Assessment>,
) {
    if let Some((ok, message)) = health.and_then(|h| h.test.as_ref()) {
        let (type_, reason) = if *ok {
            (EventType::Normal, "TestDelivered")
        } else {
            (EventType::Warning, "TestDeliveryFailed")
        };
        publish(ctx, w, type_, reason, "TestDelivery", message.clone()).await;
    }
    let delivering_before = w
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::DELIVERING));
    if let Some(after) = conditions::find(&status.conditions, conditions::DELIVERING)
        && after.status != "Unknown"
        && delivering_before.is_none_or(|b| b.status != after.status || b.reason != after.reason)
    {
        let type_ = if after.status == "False" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            w,
            type_,
            &after.reason,
            "CheckDelivery",
            after.message.clone(),
        )
        .await;
    }
    let before = w
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::SYNCED));
    let Some(after) = conditions::find(&status.conditions, conditions::SYNCED) else {
        return;
    };
    let acted = matches!(
        result,
        Ok(Synced {
            done: Done::Created | Done::Adopted | Done::Updated(_),
            ..
        })
    );
    // A new status, or a new failure; not the quiet step from "Created" to "InSync".
    let changed = before.is_none_or(|b| {
        b.status != after.status
            || (after.status == "False" && (b.reason != after.reason || b.message != after.message))
    });
    if acted || changed {
        let type_ = if after.status == "False" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, w, type_, &after.reason, "Sync", after.message.clone()).await;
    }
    let new_generation =
        w.status.as_ref().and_then(|s| s.observed_generation) != w.metadata.generation;
    if w.spec.skip_cert_verification && new_generation && result.is_ok() {
        publish(
            ctx,
            w,
            EventType::Warning,
            "CertificateVerificationSkipped",
            "Sync",
            "skipCertVerification is true: Bitbucket delivers to this URL without checking its TLS certificate".to_owned(),
        )
        .await;
    }
}

// ------------------------------------------------------------------ cleanup

async fn cleanup(w: Arc<Webhook>, ctx: &Context) -> Result<Action, Error> {
    ctx.health.forget(&w.uid().unwrap_or_default());
    ctx.metrics.webhook(&w.uid().unwrap_or_default(), None);
    let forced = w
        .annotations()
        .get(FORCE_ORPHAN_ANNOTATION)
        .is_some_and(|v| v == "true");
    let id = w.status.as_ref().and_then(|s| s.webhook_id.clone());
    let pending = w.annotations().contains_key(PENDING_CREATE_ANNOTATION);
    if forced {
        let note = format!(
            "{FORCE_ORPHAN_ANNOTATION}=true: released without deleting hook {}",
            id.as_deref().unwrap_or("(none)")
        );
        publish(ctx, &w, EventType::Warning, "ForceOrphaned", "Delete", note).await;
        return Ok(Action::await_change());
    }
    if w.spec.deletion_policy == DeletionPolicy::Orphan
        || w.spec.management_policy == ManagementPolicy::ObserveOnly
    {
        if let Some(id) = &id {
            let note = format!(
                "hook {id} is left on Bitbucket (deletionPolicy {:?}, managementPolicy {:?})",
                w.spec.deletion_policy, w.spec.management_policy
            );
            publish(ctx, &w, EventType::Normal, "Orphaned", "Delete", note).await;
        }
        return Ok(Action::await_change());
    }
    if id.is_none() && !pending {
        return Ok(Action::await_change());
    }
    // A Conflict loser never owned the hook (even one that recorded its id before the
    // claims were shared across namespaces): the older Webhook keeps it.
    if let Some(holder) = ctx.claims.holder(&w) {
        let note = format!(
            "hook {} is left on Bitbucket: Webhook {holder} manages it",
            id.as_deref().unwrap_or("(none)")
        );
        publish(ctx, &w, EventType::Normal, "NotOwned", "Delete", note).await;
        return Ok(Action::await_change());
    }
    match delete(&w, id, ctx).await {
        Ok(note) => {
            publish(ctx, &w, EventType::Normal, "Deleted", "Delete", note).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let note = format!(
                "cannot delete the hook: {e}; retrying with backoff. Annotate {FORCE_ORPHAN_ANNOTATION}=true to release the Webhook and leave the hook"
            );
            publish(ctx, &w, EventType::Warning, "DeleteFailed", "Delete", note).await;
            Err(e)
        }
    }
}

async fn delete(w: &Webhook, id: Option<String>, ctx: &Context) -> Result<String, Error> {
    let view = resolve_connection(w, ctx).await?;
    let backend = match ctx
        .connections
        .backend(&ctx.client, &view, &ctx.config.retry, &ctx.metrics)
        .await
    {
        Ok(backend) => backend,
        // Deleted together with its credential, in no fixed order: the last client built
        // for the connection still holds it.
        Err(e @ (Error::SecretNotFound(_) | Error::SecretInvalid(_))) => {
            ctx.connections.last(&view).ok_or_else(|| {
                Error::NoCredential(format!(
                    "{e}, and this operator has not used that connection since it started, so it has no credential to delete the hook with; restore the Secret, or annotate {FORCE_ORPHAN_ANNOTATION}=true to release the Webhook and leave the hook"
                ))
            })?
        }
        Err(e) => return Err(e),
    };
    let repo = RepoRef::parse(&w.spec.repository).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "repository {:?} is not owner/slug",
            w.spec.repository
        ))
    })?;
    let key = list_key(&view, &repo);
    let id = match id {
        Some(id) => id,
        // Created, but the id never reached status: the hook with our URL is ours.
        None => {
            let (hooks, _) = ctx
                .lists
                .get(&key, Duration::ZERO, || backend.list_hooks(&repo))
                .await
                .map_err(|e| repository_error(&repo, e))?;
            match hooks.into_iter().find(|h| h.url == w.spec.url) {
                Some(h) => h.id,
                None => {
                    return Ok(format!(
                        "no hook with this URL on {repo}: nothing to delete"
                    ));
                }
            }
        }
    };
    let outcome = match backend.delete_hook(&repo, &id).await {
        Ok(outcome) => outcome,
        // The repository itself is gone: so is the hook.
        Err(bitbucket::Error::NotFound { .. }) => Deleted::AlreadyGone,
        Err(e) => return Err(e.into()),
    };
    ctx.lists.remove(&key, &id).await;
    Ok(match outcome {
        Deleted::Removed => format!("deleted hook {id} from {repo}"),
        Deleted::AlreadyGone => format!("hook {id} was already gone from {repo}"),
    })
}
