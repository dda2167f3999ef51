//! This operator's finalizer, and a Webhook's pending-create mark written with it.
//!
//! A Webhook's finalizer goes on with the first write that makes a hook this Webhook's (the mark
//! before a create, else before an update or the status that records an adoption), in
//! the same reconcile: no extra write, and no round trip through the watch as with a
//! finalizer added on its own before any work. A Webhook that never gets that far (a
//! missing connection, an invalid spec) has nothing on Bitbucket and needs no finalizer.
//! A connection's goes on at its first reconcile.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Error;
use crate::api::{FINALIZER, PENDING_CREATE_ANNOTATION};

/// What the finalizer is written on.
pub trait Finalized:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug
{
}
impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug> Finalized for K {}

/// Whether the object carries this operator's finalizer.
pub fn held<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// The patch that adds the finalizer (if missing) and sets the pending mark (if `mark`),
/// or None when there is nothing to write. Adding the finalizer rewrites the whole list,
/// so it is conditional on the resourceVersion read: a stale copy gets a 409, not a
/// lost or doubled finalizer.
pub fn claim_patch<K: Resource>(w: &K, mark: Option<&str>) -> Option<Value> {
    let annotations = mark.map(|url| json!({ PENDING_CREATE_ANNOTATION: url }));
    if held(w) {
        return annotations.map(|a| json!({ "metadata": { "annotations": a } }));
    }
    let mut finalizers = w.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let mut metadata = json!({
        "resourceVersion": w.resource_version(),
        "finalizers": finalizers,
    });
    if let Some(a) = annotations {
        metadata["annotations"] = a;
    }
    Some(json!({ "metadata": metadata }))
}

/// The patch that removes the finalizer once cleanup is done (None: it is not there).
pub fn release_patch<K: Resource>(w: &K) -> Option<Value> {
    if !held(w) {
        return None;
    }
    let rest: Vec<&String> = w.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    Some(json!({ "metadata": {
        "resourceVersion": w.resource_version(),
        "finalizers": rest,
    } }))
}

/// Adds the finalizer and sets the mark, as [`claim_patch`] says.
pub async fn claim<K: Finalized>(api: &Api<K>, w: &K, mark: Option<&str>) -> Result<(), Error> {
    match claim_patch(w, mark) {
        Some(patch) => write(api, w, &patch).await,
        None => Ok(()),
    }
}

/// Removes the finalizer.
pub async fn release<K: Finalized>(api: &Api<K>, w: &K) -> Result<(), Error> {
    match release_patch(w) {
        Some(patch) => write(api, w, &patch).await,
        None => Ok(()),
    }
}

/// Clears the pending mark (once the id is in status, or nothing was created).
pub async fn clear_mark<K: Finalized>(api: &Api<K>, w: &K) -> Result<(), Error> {
    let patch = json!({ "metadata": { "annotations": { PENDING_CREATE_ANNOTATION: null } } });
    write(api, w, &patch).await
}

async fn write<K: Finalized>(api: &Api<K>, w: &K, patch: &Value) -> Result<(), Error> {
    match api
        .patch(&w.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Written from a copy older than the object: the caller reads it again.
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Stale {
            kind: K::kind(&()).into_owned(),
            name: w.name_any(),
            generation: w.meta().generation,
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Webhook;
    use crate::reconcile::webhook::fixture::webhook;

    fn with(finalizers: &[&str]) -> Webhook {
        let mut w = webhook(json!({}), &[]);
        w.metadata.resource_version = Some("7".to_owned());
        if !finalizers.is_empty() {
            w.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        }
        w
    }

    #[test]
    fn the_first_claim_adds_the_finalizer_and_the_mark_in_one_conditional_write() {
        let url = "https://ci.example.com/hook";
        assert_eq!(
            claim_patch(&with(&[]), Some(url)),
            Some(json!({ "metadata": {
                "resourceVersion": "7",
                "finalizers": [FINALIZER],
                "annotations": { PENDING_CREATE_ANNOTATION: url },
            } }))
        );
        assert_eq!(
            claim_patch(&with(&["other.example.com/keep"]), None),
            Some(json!({ "metadata": {
                "resourceVersion": "7",
                "finalizers": ["other.example.com/keep", FINALIZER],
            } })),
            "another controller's finalizer stays"
        );
    }

    #[test]
    fn a_held_finalizer_is_not_written_again() {
        assert_eq!(claim_patch(&with(&[FINALIZER]), None), None);
        assert_eq!(
            claim_patch(&with(&[FINALIZER]), Some("https://x.example.com")),
            Some(json!({ "metadata": { "annotations": {
                PENDING_CREATE_ANNOTATION: "https://x.example.com"
            } } })),
            "the mark alone, unconditionally"
        );
    }

    #[test]
    fn release_removes_only_this_operators_finalizer() {
        assert_eq!(release_patch(&with(&[])), None);
        assert_eq!(
            release_patch(&with(&["a.example.com/x", FINALIZER])),
            Some(json!({ "metadata": {
                "resourceVersion": "7",
                "finalizers": ["a.example.com/x"],
            } }))
        );
    }
}
