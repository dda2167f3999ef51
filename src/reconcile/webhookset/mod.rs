//! The WebhookSet reconciler: select repositories (the explicit list, or a listing of the
//! workspace or project, repeated every discovery interval), keep one Webhook per
//! repository as the template says, and count how they stand. The Webhook reconciler
//! does the Bitbucket work of each; deleting the set deletes its Webhooks through their
//! owner reference (Kubernetes' garbage collector), and their finalizers the hooks.

pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use self::plan::{Step, Tally};
use super::conditions::{self, Outcome, Status};
use super::publish::{self, Note};
use super::webhook::dereference;
use super::{Context, Error, Invalid};
use crate::api::{Flavor, Reason, Webhook, WebhookSet, WebhookSetStatus};
use crate::bitbucket::RepoRef;

const DEFAULT_DISCOVERY: Duration = Duration::from_secs(600);

/// One listing's result, kept for the discovery interval.
struct Discovery {
    generation: Option<i64>,
    at: Instant,
    repositories: Vec<RepoRef>,
}

/// What the WebhookSet controller of a namespace (or of all) shares.
pub struct SetContext {
    pub ctx: Arc<Context>,
    /// The Webhooks that carry the set label, from the controller's own watch.
    pub children: Store<Webhook>,
    discoveries: Mutex<HashMap<String, Discovery>>,
}

impl SetContext {
    pub fn new(ctx: Arc<Context>, children: Store<Webhook>) -> SetContext {
        SetContext {
            ctx,
            children,
            discoveries: Mutex::default(),
        }
    }
}

/// "90s", "10m", "1h" (at least ten seconds; each discovery is a paged listing, counted
/// against the connection's budget).
fn discovery_interval(spec: Option<&str>) -> Result<Duration, Invalid> {
    let Some(text) = spec else {
        return Ok(DEFAULT_DISCOVERY);
    };
    let invalid = || Invalid::DiscoveryInterval {
        value: text.to_owned(),
    };
    let unit = text.chars().last().ok_or_else(invalid)?;
    let (count, _) = text.split_at(text.len() - unit.len_utf8());
    let count: u64 = count.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        's' => count,
        'm' => count.saturating_mul(60),
        'h' => count.saturating_mul(3600),
        _ => return Err(invalid()),
    };
    if seconds < 10 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(seconds))
}

/// The repositories a set selects.
struct Selection {
    repositories: Vec<RepoRef>,
    /// How long until the selector should be listed again (None: an explicit list).
    next: Option<Duration>,
    /// Listed in this reconcile, not served from memory.
    listed: bool,
}

/// The repositories the set selects, and how long until they should be listed again.
async fn selection(set: &WebhookSet, sctx: &SetContext) -> Result<Selection, Error> {
    if let Some(list) = &set.spec.repositories {
        let repositories = list
            .iter()
            .map(|r| RepoRef::parse(r).ok_or_else(|| Invalid::Repository { value: r.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Selection {
            repositories,
            next: None,
            listed: false,
        });
    }
    let Some(selector) = &set.spec.selector else {
        return Err(Invalid::Selector("set repositories or selector".to_owned()).into());
    };
    let interval = discovery_interval(set.spec.discovery_interval.as_deref())?;
    let uid = set.uid().unwrap_or_default();
    let generation = set.metadata.generation;
    let fresh = |d: &Discovery| d.generation == generation && d.at.elapsed() < interval;
    {
        let discoveries = sctx.discoveries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = discoveries.get(&uid).filter(|d| fresh(d)) {
            return Ok(Selection {
                repositories: d.repositories.clone(),
                next: Some(interval.saturating_sub(d.at.elapsed())),
                listed: false,
            });
        }
    }
    let ctx = &sctx.ctx;
    let namespace = set.namespace().unwrap_or_default();
    let view = dereference::connection_for(&namespace, &set.spec.connection_ref, None, ctx).await?;
    view.readiness()?;
    let (owner, project) = owner_to_list(view.spec.flavor, selector)?;
    let backend = ctx.connections.backend(&ctx.secret_reader(), &view).await?;
    let listed = backend
        .list_repositories(&owner, project.as_deref())
        .await
        .map_err(|e| match e {
            crate::bitbucket::Error::NotFound { message } => Error::OwnerNotFound {
                owner: match view.spec.flavor {
                    Flavor::Cloud => format!("workspace {owner}"),
                    _ => format!("project {owner}"),
                },
                message,
            },
            other => other.into(),
        })?;
    let repositories = plan::select(listed, &selector.include, &selector.exclude)?;
    tracing::debug!(
        listed = repositories.len(),
        "discovered the selector's repositories"
    );
    sctx.discoveries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            uid,
            Discovery {
                generation,
                at: Instant::now(),
                repositories: repositories.clone(),
            },
        );
    Ok(Selection {
        repositories,
        next: Some(interval),
        listed: true,
    })
}

/// What a selector lists: (workspace, project within it) on Cloud, (project, None) on
/// Data Center.
fn owner_to_list(
    flavor: Flavor,
    selector: &crate::api::RepositorySelector,
) -> Result<(String, Option<String>), Invalid> {
    match (flavor, &selector.workspace, &selector.project) {
        (Flavor::Cloud, Some(workspace), project) => Ok((workspace.clone(), project.clone())),
        (Flavor::Cloud, None, _) => Err(Invalid::Selector(
            "a Bitbucket Cloud connection lists a workspace: set selector.workspace".to_owned(),
        )),
        (_, None, Some(project)) => Ok((project.clone(), None)),
        (_, _, _) => Err(Invalid::Selector(
            "a Data Center connection lists a project: set selector.project, not selector.workspace"
                .to_owned(),
        )),
    }
}

/// Reconciles one WebhookSet.
#[tracing::instrument(skip_all, fields(webhookset = %super::object_key(set.as_ref())))]
pub async fn reconcile(set: Arc<WebhookSet>, sctx: Arc<SetContext>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        // Its Webhooks go with it (owner references); nothing is left to do here.
        return Ok(Action::await_change());
    }
    let ctx = &sctx.ctx;
    let started = std::time::Instant::now();
    let namespace = set.namespace().unwrap_or_default();
    let result = selection(&set, &sctx).await;
    let (outcome, tally) = match &result {
        Ok(selected) => converge(&set, &sctx, &selected.repositories).await?,
        Err(e) => (
            Outcome::new(Status::False, e.reason(), e.to_string()),
            kept(set.status.clone().unwrap_or_default()),
        ),
    };
    ctx.metrics.reconciled(
        "WebhookSet",
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    let discovered = discovery_time(&result, set.status.as_ref());
    let status = new_status(
        &set,
        &outcome,
        &tally,
        discovered,
        Time(jiff::Timestamp::now()),
    );
    if set.status.as_ref() != Some(&status) {
        let api: Api<WebhookSet> = Api::namespaced(ctx.client.clone(), &namespace);
        publish::status(&api, &set.name_any(), &status).await?;
    }
    if result.is_ok() {
        ctx.succeeded(&super::object_key(set.as_ref()));
    }
    // Webhooks waiting their turn are made as the ones before them get Ready (their
    // changes bring the set back here); the requeue is the floor should none come.
    let paced = (tally.waiting > 0).then_some(PACED_LOOK);
    match result {
        Err(e) => Err(e),
        Ok(Selection { next, .. }) => match next.into_iter().chain(paced).min() {
            Some(next) => Ok(Action::requeue(next.max(Duration::from_secs(1)))),
            None => Ok(Action::await_change()),
        },
    }
}

/// The set's Webhooks (from the controller's watch of the set label).
fn children_of(set: &WebhookSet, sctx: &SetContext) -> Vec<Arc<Webhook>> {
    let namespace = set.namespace();
    let uid = set.uid().unwrap_or_default();
    sctx.children
        .state()
        .into_iter()
        .filter(|w| w.namespace() == namespace && w.owner_references().iter().any(|o| o.uid == uid))
        .collect()
}

/// Makes, mends and removes the set's Webhooks for the selected repositories, says so,
/// and counts how they stand.
async fn converge(
    set: &WebhookSet,
    sctx: &SetContext,
    repositories: &[RepoRef],
) -> Result<(Outcome, Tally), Error> {
    let ctx = &sctx.ctx;
    let children = children_of(set, sctx);
    let children: Vec<&Webhook> = children.iter().map(AsRef::as_ref).collect();
    let wanted: Vec<Webhook> = repositories
        .iter()
        .filter_map(|r| plan::child(set, r))
        .collect();
    let window = plan::creation_window(creation_budget(set, ctx).await);
    let (steps, waiting) = plan::steps(&wanted, &children, window);
    let (created, deleted) = execute(set, ctx, steps).await?;
    publish::events(&ctx.recorder, set, notes(created, deleted)).await;
    let tally = Tally {
        waiting,
        ..plan::tally(&wanted, &children)
    };
    Ok((standing(&tally), tally))
}

/// The counts the status had: a failed selection removes nothing and counts nothing anew.
fn kept(previous: WebhookSetStatus) -> Tally {
    let count = |n: i32| usize::try_from(n).unwrap_or(0);
    Tally {
        selected: count(previous.selected),
        ready: count(previous.ready),
        failing: count(previous.failing),
        progressing: 0,
        waiting: count(previous.waiting),
        not_ready: previous.not_ready,
    }
}

/// A new listing's time, in whole seconds as the API server keeps it (so an unchanged
/// status compares equal); a listing served from memory keeps the time it had.
fn discovery_time(
    result: &Result<Selection, Error>,
    status: Option<&WebhookSetStatus>,
) -> Option<Time> {
    let previous = status.and_then(|s| s.last_discovery_time.clone());
    match result {
        Ok(Selection {
            next: Some(_),
            listed,
            ..
        }) if *listed || previous.is_none() => {
            let now = jiff::Timestamp::now();
            jiff::Timestamp::from_second(now.as_second())
                .ok()
                .map(Time)
                .or(previous)
        }
        _ => previous,
    }
}

/// How often a set with Webhooks waiting to be made looks again at the latest.
const PACED_LOOK: Duration = Duration::from_secs(5);

/// The request budget per hour of the set's connection (the chart's default when the
/// connection is not readable now: the pace only needs to be about right).
async fn creation_budget(set: &WebhookSet, ctx: &Context) -> u32 {
    let namespace = set.namespace().unwrap_or_default();
    match dereference::connection_for(&namespace, &set.spec.connection_ref, None, ctx).await {
        Ok(view) => view.requests_per_hour(),
        Err(_) => super::connection::DEFAULT_REQUESTS_PER_HOUR,
    }
}

/// The set's Ready outcome from its Webhooks.
fn standing(t: &Tally) -> Outcome {
    if t.ready == t.selected {
        return Outcome::new(
            Status::True,
            Reason::Ready,
            format!("all {} Webhooks are Ready", t.selected),
        );
    }
    let paced = if t.waiting > 0 {
        format!(
            " ({} still to be made, a few at a time as the connection's request budget allows)",
            t.waiting
        )
    } else {
        String::new()
    };
    Outcome::new(
        Status::False,
        Reason::WebhooksNotReady,
        format!(
            "{} of {} Webhooks are Ready{paced}; not yet: {}{}",
            t.ready,
            t.selected,
            t.not_ready.join(", "),
            if t.selected - t.ready > t.not_ready.len() {
                ", ..."
            } else {
                ""
            }
        ),
    )
}

/// Runs the steps; (created, deleted).
async fn execute(
    set: &WebhookSet,
    ctx: &Context,
    steps: Vec<Step>,
) -> Result<(usize, usize), Error> {
    let api: Api<Webhook> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let (mut created, mut deleted) = (0, 0);
    for step in steps {
        match step {
            Step::Create(w) => match api.create(&PostParams::default(), &w).await {
                Ok(_) => created += 1,
                // Made meanwhile (the watch had not shown it yet): the next reconcile sees it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            },
            Step::Update { name, patch } => {
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    // Changed or gone meanwhile: the watch brings the set back here.
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Step::Delete { name } => match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            },
        }
    }
    Ok((created, deleted))
}

/// What a reconcile's steps did, as Events.
fn notes(created: usize, deleted: usize) -> Vec<Note> {
    let mut notes = Vec::new();
    if created > 0 {
        let message = format!("created {created} Webhooks");
        notes.push(Note::normal(Reason::Created, "Create", message));
    }
    if deleted > 0 {
        let message = format!("deleted {deleted} Webhooks (their repositories left the selection)");
        notes.push(Note::normal(Reason::Deleted, "Delete", message));
    }
    notes
}

/// The set's status (pure): Ready from its Webhooks, and kstatus' Stalled or Reconciling.
fn new_status(
    set: &WebhookSet,
    outcome: &Outcome,
    tally: &Tally,
    discovered: Option<Time>,
    now: Time,
) -> WebhookSetStatus {
    let previous = set.status.clone().unwrap_or_default();
    let generation = set.metadata.generation;
    let condition = |type_, o: &Outcome| {
        conditions::condition(&previous.conditions, type_, o, generation, &now)
    };
    let mut conditions = vec![condition(conditions::READY, outcome)];
    // Webhooks not Ready stall the set only when none of them is still progressing.
    let terminal = match outcome.reason {
        Reason::WebhooksNotReady => tally.progressing == 0,
        reason => reason.is_terminal(),
    };
    if let Some((type_, progress)) = conditions::progress_of(outcome, terminal) {
        conditions.push(condition(type_, &progress));
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    WebhookSetStatus {
        observed_generation: generation,
        selected: count(tally.selected),
        ready: count(tally.ready),
        failing: count(tally.failing),
        waiting: count(tally.waiting),
        not_ready: tally.not_ready.clone(),
        last_discovery_time: discovered,
        conditions,
    }
}

pub fn error_policy(set: Arc<WebhookSet>, error: &Error, sctx: Arc<SetContext>) -> Action {
    super::publish::error_policy(set.as_ref(), error, &sctx.ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_intervals_are_at_least_ten_seconds() {
        assert_eq!(discovery_interval(None).ok(), Some(DEFAULT_DISCOVERY));
        assert_eq!(
            discovery_interval(Some("90s")).ok(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            discovery_interval(Some("2h")).ok(),
            Some(Duration::from_secs(7200))
        );
        for bad in ["5s", "m", "10d", "", "1.5m", "5é", "é"] {
            assert!(discovery_interval(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_set_is_ready_only_when_every_webhook_is() {
        let t = Tally {
            selected: 3,
            ready: 3,
            ..Tally::default()
        };
        assert_eq!(standing(&t).status, Status::True);
        let t = Tally {
            selected: 30,
            ready: 8,
            progressing: 22,
            not_ready: vec!["acme/a".into(), "acme/b".into()],
            ..Tally::default()
        };
        let o = standing(&t);
        assert_eq!(
            (o.status, o.reason),
            (Status::False, Reason::WebhooksNotReady)
        );
        assert_eq!(
            o.message,
            "8 of 30 Webhooks are Ready; not yet: acme/a, acme/b, ..."
        );
    }

    #[test]
    fn the_set_stalls_on_terminal_reasons_and_on_webhooks_none_of_which_progress() {
        let set: WebhookSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "bitbucket.hooks.dev/v1alpha1",
            "kind": "WebhookSet",
            "metadata": { "name": "ci", "namespace": "team", "generation": 3 },
            "spec": {
                "connectionRef": { "name": "bitbucket" },
                "repositories": ["acme/api"],
                "template": { "spec": { "url": "https://ci.example.com/hook" } },
            },
        }))
        .expect("set");
        let not_ready = Outcome::new(Status::False, Reason::WebhooksNotReady, "1 of 2");
        let table = [
            (Outcome::new(Status::True, Reason::Ready, "all"), 0, None),
            (not_ready.clone(), 1, Some(conditions::RECONCILING)),
            (not_ready, 0, Some(conditions::STALLED)),
            (
                Outcome::new(Status::False, Reason::InvalidSpec, "bad"),
                1,
                Some(conditions::STALLED),
            ),
            (
                Outcome::new(Status::False, Reason::BitbucketUnavailable, "503"),
                0,
                Some(conditions::RECONCILING),
            ),
        ];
        for (outcome, progressing, expected) in table {
            let tally = Tally {
                progressing,
                ..Tally::default()
            };
            let now = Time(jiff::Timestamp::UNIX_EPOCH);
            let status = new_status(&set, &outcome, &tally, None, now);
            let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
            let mut want = vec![conditions::READY];
            want.extend(expected);
            assert_eq!(
                types, want,
                "{} with {progressing} progressing",
                outcome.reason
            );
            assert!(
                status
                    .conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(3))
            );
        }
    }
}
