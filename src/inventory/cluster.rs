//! Which Webhook manages which hook, from the cluster: every Webhook whose status records
//! a hook id and whose connection points at the server being inventoried.

use std::collections::HashMap;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::assess::Managers;
use super::model::Manager;
use crate::api::{
    BitbucketConnection, ClusterBitbucketConnection, ConnectionSpec, Flavor, Webhook,
};
use crate::identity::{ConnectionId, PlaceKey, ServerName};

fn listing(what: &str, e: kube::Error) -> String {
    format!("cannot list {what} in the cluster: {e}")
}

/// The managers of the hooks on `server`, keyed by place and hook id.
pub async fn managers(
    client: &Client,
    flavor: Flavor,
    server: &ServerName,
) -> Result<Managers, String> {
    let all = ListParams::default();
    let mut connections: HashMap<ConnectionId, ServerName> = HashMap::new();
    let matching = |spec: &ConnectionSpec| {
        (spec.flavor == flavor).then(|| ServerName::new(spec.base_url.as_deref()))
    };
    let namespaced: Api<BitbucketConnection> = Api::all(client.clone());
    for c in namespaced
        .list(&all)
        .await
        .map_err(|e| listing("BitbucketConnections", e))?
    {
        if let Some(at) = matching(&c.spec.connection) {
            let id = ConnectionId::new(
                crate::api::ConnectionKind::BitbucketConnection,
                c.namespace().as_deref(),
                &c.name_any(),
            );
            connections.insert(id, at);
        }
    }
    let cluster: Api<ClusterBitbucketConnection> = Api::all(client.clone());
    // A user who may not list cluster connections still sees the namespaced ones.
    if let Ok(list) = cluster.list(&all).await {
        for c in list {
            if let Some(at) = matching(&c.spec.connection) {
                let id = ConnectionId::new(
                    crate::api::ConnectionKind::ClusterBitbucketConnection,
                    None,
                    &c.name_any(),
                );
                connections.insert(id, at);
            }
        }
    }
    let webhooks: Api<Webhook> = Api::all(client.clone());
    let mut managers = Managers::new();
    for w in webhooks
        .list(&all)
        .await
        .map_err(|e| listing("Webhooks", e))?
    {
        if connections.get(&ConnectionId::of(&w)) != Some(server) {
            continue;
        }
        let Some(id) = w.status.as_ref().and_then(|s| s.webhook_id.clone()) else {
            continue;
        };
        let Ok(place) = crate::reconcile::webhook_place(&w, flavor) else {
            continue;
        };
        managers.insert((PlaceKey::from(&place), id), manager_of(&w));
    }
    Ok(managers)
}

/// The Webhook, or the WebhookSet that owns it.
fn manager_of(w: &Webhook) -> Manager {
    let namespace = w.namespace().unwrap_or_default();
    let set = w
        .owner_references()
        .iter()
        .find(|o| o.kind == "WebhookSet")
        .map(|o| o.name.clone());
    Manager {
        kind: if set.is_some() {
            "WebhookSet"
        } else {
            "Webhook"
        }
        .to_owned(),
        namespace,
        name: set.unwrap_or_else(|| w.name_any()),
        webhook: w.name_any(),
    }
}
