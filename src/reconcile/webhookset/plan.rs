//! What a WebhookSet should have, and the steps from the Webhooks it has to those. Pure:
//! the reads and writes are in `mod.rs`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::{
    DeliveryHealth, NOT_READY_SHOWN, REPOSITORY_ANNOTATION, Scope, WEBHOOKSET_LABEL, Webhook,
    WebhookSet, WebhookSpec,
};
use crate::bitbucket::RepoRef;
use crate::reconcile::Invalid;
use crate::reconcile::conditions;

/// The name of the set's Webhook for `repo`: "<set>-<slug>-<hash>", readable and stable;
/// the hash (of the repository, case-insensitively) tells apart slugs that read alike
/// once made a valid name, and one slug in two workspaces or projects.
pub fn child_name(set: &str, repo: &RepoRef) -> String {
    let key = repo.to_string().to_ascii_lowercase();
    let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes())
        .simple()
        .to_string();
    let mut slug = String::new();
    for c in repo.slug.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut name = format!("{set}-{}", slug.trim_matches('-'));
    // A Webhook's name is a DNS subdomain name of at most 253 characters.
    name.truncate(253 - 9);
    let name = name.trim_end_matches(['-', '.']);
    format!("{name}-{}", &hash[..8])
}

/// The repositories of a listing the selector's patterns select (on the slug,
/// case-insensitively), in listing order.
pub fn select(
    listed: Vec<RepoRef>,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<RepoRef>, Invalid> {
    let compile = |patterns: &[String]| -> Result<Vec<glob::Pattern>, Invalid> {
        patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| Invalid::Selector(format!("pattern {p:?}: {e}")))
            })
            .collect()
    };
    let include = compile(include)?;
    let exclude = compile(exclude)?;
    let options = glob::MatchOptions {
        case_sensitive: false,
        ..Default::default()
    };
    let matches = |patterns: &[glob::Pattern], slug: &str| {
        patterns.iter().any(|p| p.matches_with(slug, options))
    };
    let mut seen = BTreeSet::new();
    Ok(listed
        .into_iter()
        .filter(|r| include.is_empty() || matches(&include, &r.slug))
        .filter(|r| !matches(&exclude, &r.slug))
        .filter(|r| seen.insert(r.to_string().to_ascii_lowercase()))
        .collect())
}

/// The Webhook the set wants for `repo` (None: the set has no uid yet to own it by).
pub fn child(set: &WebhookSet, repo: &RepoRef) -> Option<Webhook> {
    let owner = set.controller_owner_ref(&())?;
    let template = &set.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(WEBHOOKSET_LABEL.to_owned(), set.name_any());
    let mut annotations = template.metadata.annotations.clone();
    annotations.insert(REPOSITORY_ANNOTATION.to_owned(), repo.to_string());
    Some(Webhook {
        metadata: ObjectMeta {
            name: Some(child_name(&set.name_any(), repo)),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: WebhookSpec {
            connection_ref: set.spec.connection_ref.clone(),
            repository: repo.to_string(),
            scope: Scope::Repository,
            settings: template.spec.clone(),
        },
        status: None,
    })
}

/// The set's Webhooks by name.
fn by_name<'a>(children: &[&'a Webhook]) -> BTreeMap<String, &'a Webhook> {
    children.iter().map(|w| (w.name_any(), *w)).collect()
}

/// One write that brings the set's Webhooks to what it wants.
#[derive(Debug)]
pub enum Step {
    Create(Box<Webhook>),
    /// A JSON merge patch that puts a Webhook edited by hand (or made from an older
    /// template) back to the template; `resource_version` guards it.
    Update {
        name: String,
        patch: Value,
    },
    /// A Webhook for a repository that left the selection.
    Delete {
        name: String,
    },
}

/// How many of a set's Webhooks may be on their way to Ready at once, for a connection
/// budget of `per_hour` requests: each needs a listing and a create, and a create must
/// follow its listing within the ten seconds after which the listing is made again; with
/// `window` Webhooks sharing the budget's refill, about `window / rate` seconds pass
/// between the two. So: five seconds' worth of refill, at least 2 and at most 64.
pub fn creation_window(per_hour: u32) -> usize {
    let per_second = f64::from(per_hour) / 3600.0;
    ((per_second * 5.0).floor() as usize).clamp(2, 64)
}

/// A Webhook still on its way: not Ready and not Stalled at its current generation.
fn progressing(w: &Webhook) -> bool {
    let status = w.status.as_ref();
    let current = status.and_then(|s| s.observed_generation) == w.metadata.generation;
    let holds = |type_| current && status.is_some_and(|s| conditions::holds(&s.conditions, type_));
    !holds(conditions::READY) && !holds(conditions::STALLED)
}

/// The steps from `children` (the Webhooks the set owns) to `wanted`, and how many
/// Webhooks wait to be made: new ones are made only while fewer than `window` of the
/// set's Webhooks are still progressing.
pub fn steps(wanted: &[Webhook], children: &[&Webhook], window: usize) -> (Vec<Step>, usize) {
    let existing = by_name(children);
    let wanted_names: BTreeSet<String> = wanted.iter().map(ResourceExt::name_any).collect();
    let in_flight = children.iter().filter(|w| progressing(w)).count();
    let mut room = window.saturating_sub(in_flight);
    let mut waiting = 0;
    let mut steps = Vec::new();
    for want in wanted {
        match existing.get(&want.name_any()) {
            None if room == 0 => waiting += 1,
            None => {
                room -= 1;
                steps.push(Step::Create(Box::new(want.clone())));
            }
            // Going away: made again once it is gone.
            Some(have) if have.metadata.deletion_timestamp.is_some() => {}
            // repository and connectionRef cannot change: replace the Webhook.
            Some(have)
                if have.spec.repository != want.spec.repository
                    || have.spec.connection_ref != want.spec.connection_ref =>
            {
                steps.push(Step::Delete {
                    name: have.name_any(),
                });
            }
            Some(have) => {
                if let Some(patch) = update(have, want) {
                    steps.push(Step::Update {
                        name: have.name_any(),
                        patch,
                    });
                }
            }
        }
    }
    for (name, have) in &existing {
        if !wanted_names.contains(name) && have.metadata.deletion_timestamp.is_none() {
            steps.push(Step::Delete { name: name.clone() });
        }
    }
    (steps, waiting)
}

/// The merge patch that makes `have` what `want` asks, or None when it already is:
/// the spec exactly (fields added by hand are removed), the template's labels and
/// annotations (others stay), and the set's owner reference.
fn update(have: &Webhook, want: &Webhook) -> Option<Value> {
    let contains = |have: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owned = want.metadata.owner_references.iter().flatten().all(|o| {
        have.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|h| h.uid == o.uid)
    });
    let labels_ok = contains(&have.metadata.labels, &want.metadata.labels);
    let annotations_ok = contains(&have.metadata.annotations, &want.metadata.annotations);
    if have.spec == want.spec && labels_ok && annotations_ok && owned {
        return None;
    }
    let mut spec = serde_json::to_value(&want.spec).ok()?;
    if let Ok(current) = serde_json::to_value(&have.spec) {
        null_removed(&current, &mut spec);
    }
    let mut metadata = json!({
        "resourceVersion": have.metadata.resource_version,
        "labels": want.metadata.labels,
        "annotations": want.metadata.annotations,
    });
    if !owned {
        let mut references = have.metadata.owner_references.clone().unwrap_or_default();
        references.extend(want.metadata.owner_references.iter().flatten().cloned());
        metadata["ownerReferences"] = json!(references);
    }
    Some(json!({ "metadata": metadata, "spec": spec }))
}

/// Sets to null, in `want`, every key `have` has and `want` lacks (a merge patch removes
/// a field only when told to), at every depth.
fn null_removed(have: &Value, want: &mut Value) {
    let (Value::Object(have), Value::Object(want)) = (have, want) else {
        return;
    };
    for (key, old) in have {
        match want.get_mut(key) {
            None => {
                want.insert(key.clone(), Value::Null);
            }
            Some(new) => null_removed(old, new),
        }
    }
}

/// How the set's Webhooks stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub selected: usize,
    pub ready: usize,
    pub failing: usize,
    /// Not Ready and not Stalled: still in progress.
    pub progressing: usize,
    /// Not made yet: creation is paced (set from [`steps`], which decides it).
    pub waiting: usize,
    /// The first repositories (sorted) whose Webhook is not Ready.
    pub not_ready: Vec<String>,
}

/// Counts the Webhooks of `wanted` among `children`.
pub fn tally(wanted: &[Webhook], children: &[&Webhook]) -> Tally {
    let existing = by_name(children);
    let mut tally = Tally {
        selected: wanted.len(),
        ..Tally::default()
    };
    let mut not_ready = BTreeSet::new();
    for want in wanted {
        let have = existing.get(&want.name_any());
        let status = have.and_then(|w| w.status.as_ref());
        let current = have
            .is_some_and(|w| status.and_then(|s| s.observed_generation) == w.metadata.generation);
        if current && status.is_some_and(|s| conditions::holds(&s.conditions, conditions::READY)) {
            tally.ready += 1;
        } else {
            not_ready.insert(want.spec.repository.clone());
            if have.is_none_or(|w| progressing(w)) {
                tally.progressing += 1;
            }
        }
        if status
            .and_then(|s| s.delivery.as_ref())
            .is_some_and(|d| d.health == DeliveryHealth::Failing)
        {
            tally.failing += 1;
        }
    }
    tally.not_ready = not_ready.into_iter().take(NOT_READY_SHOWN).collect();
    tally
}

#[cfg(test)]
mod tests;
