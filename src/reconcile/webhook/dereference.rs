//! What a Webhook references: its connection (if it may use it) and its signing Secret
//! (generated when asked to).

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::api::{
    BitbucketConnection, ClusterBitbucketConnection, ConnectionKind, ConnectionRef, FIELD_MANAGER,
    GENERATED_LABEL, Reason, Webhook,
};
use crate::reconcile::connection::View;
use crate::reconcile::plan::DesiredSecret;
use crate::reconcile::publish::Note;
use crate::reconcile::{Context, Error, Invalid, Refusal, SecretProblem};

/// The connection a Webhook references, if it may use it.
pub async fn connection(w: &Webhook, ctx: &Context) -> Result<View, Error> {
    let namespace = w.namespace().unwrap_or_default();
    connection_for(
        &namespace,
        &w.spec.connection_ref,
        Some(&w.spec.repository),
        ctx,
    )
    .await
}

/// The connection `reference` names from `namespace`, if that namespace may use it (and,
/// given one, for `repository`: a WebhookSet asks before it knows its repositories, and
/// each of its Webhooks is checked on its own).
#[tracing::instrument(skip_all)]
pub async fn connection_for(
    namespace: &str,
    reference: &ConnectionRef,
    repository: Option<&str>,
    ctx: &Context,
) -> Result<View, Error> {
    let namespace = namespace.to_owned();
    let name = &reference.name;
    match reference.kind {
        ConnectionKind::BitbucketConnection => {
            let key = ObjectRef::new(name).within(&namespace);
            let c = match ctx.connection_cache.as_ref().and_then(|s| s.get(&key)) {
                Some(c) => c,
                // Not (yet) in the watch's store: the API server decides.
                None => Api::<BitbucketConnection>::namespaced(ctx.client.clone(), &namespace)
                    .get_opt(name)
                    .await?
                    .map(Arc::new)
                    .ok_or_else(|| Error::ConnectionNotFound {
                        kind: "BitbucketConnection",
                        name: format!("{namespace}/{name}"),
                    })?,
            };
            Ok(View::namespaced(&c))
        }
        ConnectionKind::ClusterBitbucketConnection => {
            if !ctx.config.cluster_connections {
                return Err(Refusal::ClusterConnectionsOff.into());
            }
            let key = ObjectRef::new(name);
            let c = match ctx
                .cluster_connection_cache
                .as_ref()
                .and_then(|s| s.get(&key))
            {
                Some(c) => c,
                None => Api::<ClusterBitbucketConnection>::all(ctx.client.clone())
                    .get_opt(name)
                    .await?
                    .map(Arc::new)
                    .ok_or_else(|| Error::ConnectionNotFound {
                        kind: "ClusterBitbucketConnection",
                        name: name.clone(),
                    })?,
            };
            let labels = Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&namespace)
                .await?
                .map(|n| n.labels().clone())
                .unwrap_or_default();
            admits(&c, &namespace, &labels, repository)?;
            Ok(View::cluster(&c, &ctx.config.cluster_secret_namespace))
        }
    }
}

/// A cluster connection serves only the namespaces and repositories it allows.
fn admits(
    c: &ClusterBitbucketConnection,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
    repository: Option<&str>,
) -> Result<(), Refusal> {
    let connection = c.name_any();
    let Some(selector) = &c.spec.allowed_namespaces else {
        return Err(Refusal::NoNamespaceAllowed { connection });
    };
    let selector = Selector::try_from(selector.clone()).map_err(|e| Refusal::InvalidSelector {
        connection: connection.clone(),
        problem: e.to_string(),
    })?;
    if !selector.matches(labels) {
        return Err(Refusal::Namespace {
            connection,
            namespace: namespace.to_owned(),
            selector: selector.to_string(),
        });
    }
    if let (Some(patterns), Some(repository)) = (&c.spec.allowed_repositories, repository) {
        let options = glob::MatchOptions {
            case_sensitive: false,
            ..Default::default()
        };
        let ok = patterns
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches_with(repository, options)));
        if !ok {
            return Err(Refusal::Repository {
                connection,
                repository: repository.to_owned(),
                patterns: patterns.clone(),
            });
        }
    }
    Ok(())
}

/// Generates the signing Secret when the Webhook asks for one and it does not exist, and
/// says so.
#[tracing::instrument(skip_all)]
pub async fn generated_secret(w: &Webhook, ctx: &Context) -> Result<Option<Note>, Error> {
    let Some(reference) = w.spec.settings.secret_ref.as_ref().filter(|r| r.generate) else {
        return Ok(None);
    };
    let namespace = w.namespace().unwrap_or_default();
    let secrets = ctx.secret_reader();
    if secrets.get(&namespace, &reference.name).await?.is_some() {
        return Ok(None);
    }
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    generate(w, &api, &reference.name, &reference.key).await?;
    Ok(Some(Note::normal(
        Reason::SecretGenerated,
        "GenerateSecret",
        format!(
            "created Secret {} with a random signing secret in key {}",
            reference.name, reference.key
        ),
    )))
}

/// The signing secret.
#[tracing::instrument(skip_all)]
pub async fn signing_secret(w: &Webhook, ctx: &Context) -> Result<Option<DesiredSecret>, Error> {
    let Some(reference) = &w.spec.settings.secret_ref else {
        return Ok(None);
    };
    let namespace = w.namespace().unwrap_or_default();
    secret_at(ctx, &namespace, &reference.name, &reference.key)
        .await
        .map(Some)
}

/// A Secret key's value as a signing secret: trimmed, not empty, at most the 128
/// characters Bitbucket accepts.
pub async fn secret_at(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<DesiredSecret, Error> {
    let (value, version) = ctx.secret_reader().value(namespace, name, key).await?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(SecretProblem::Empty {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        }
        .into());
    }
    if value.chars().count() > 128 {
        return Err(Invalid::SecretTooLong {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
        .into());
    }
    Ok(DesiredSecret {
        value: value.into(),
        version,
    })
}

/// Creates the Secret with 32 random bytes (hex), owned by the Webhook (collected with it).
async fn generate(w: &Webhook, api: &Api<Secret>, name: &str, key: &str) -> Result<(), Error> {
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
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.create(&params, &secret).await {
        Ok(_) => Ok(()),
        // Created meanwhile (another reconcile, or a person): use that one.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClusterBitbucketConnectionSpec;

    fn connection(
        namespaces: Option<&str>,
        repositories: Option<&[&str]>,
    ) -> ClusterBitbucketConnection {
        let mut spec = serde_json::json!({
            "flavor": "Cloud",
            "auth": {"type": "Bearer", "secretRef": {"name": "token"}},
        });
        if let Some(team) = namespaces {
            spec["allowedNamespaces"] = serde_json::json!({"matchLabels": {"team": team}});
        }
        if let Some(r) = repositories {
            spec["allowedRepositories"] = serde_json::json!(r);
        }
        let spec: ClusterBitbucketConnectionSpec = serde_json::from_value(spec).expect("spec");
        ClusterBitbucketConnection::new("shared", spec)
    }

    #[test]
    fn cluster_connections_admit_by_namespace_labels_and_repository_globs() {
        let labels = |team: &str| [("team".to_owned(), team.to_owned())].into();
        let table = [
            (
                connection(None, None),
                "a",
                "x/y",
                Some("allows no namespace"),
            ),
            (connection(Some("a"), None), "a", "x/y", None),
            (
                connection(Some("a"), None),
                "b",
                "x/y",
                Some("does not allow namespace b"),
            ),
            (connection(Some("a"), Some(&["x/*"])), "a", "X/Y", None),
            (
                connection(Some("a"), Some(&["x/*", "z/app"])),
                "a",
                "y/app",
                Some("does not allow repository y/app (allowedRepositories: x/*, z/app)"),
            ),
        ];
        for (c, team, repository, expected) in table {
            let got = admits(&c, team, &labels(team), Some(repository))
                .err()
                .map(|e| e.to_string());
            match (got, expected) {
                (None, None) => {}
                (Some(e), Some(text)) => assert!(e.contains(text), "{e} should say {text}"),
                (got, expected) => panic!("{team} {repository}: {got:?}, expected {expected:?}"),
            }
        }
    }
}
