//! Where a Webhook delivers: its `url`, or what `urlFrom` names. A Flux Receiver gives
//! its `status.webhookPath` under a base URL, and (without a `secretRef`) its token as the
//! signing secret, so Bitbucket signs what Flux verifies; a ConfigMap or Secret key gives
//! the URL itself.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::dereference;
use crate::api::{Flavor, KeyRef, ReceiverRef, Webhook};
use crate::reconcile::connection::View;
use crate::reconcile::plan::DesiredSecret;
use crate::reconcile::{Context, Error, Invalid, SecretProblem};

/// Flux's Receiver API.
pub const RECEIVER_GROUP: &str = "notification.toolkit.fluxcd.io";
pub const RECEIVER_VERSION: &str = "v1";

/// Where deliveries go, and the Receiver's token when it signs them.
#[derive(Debug)]
pub struct Delivery {
    pub url: String,
    pub receiver_secret: Option<DesiredSecret>,
}

/// The Webhook's delivery URL (and a "bitbucket" Receiver's token when the Webhook has no
/// `secretRef`).
pub async fn resolve(w: &Webhook, view: &View, ctx: &Context) -> Result<Delivery, Error> {
    let settings = &w.spec.settings;
    let Some(source) = &settings.url_from else {
        return Ok(Delivery {
            url: settings.url.clone(),
            receiver_secret: None,
        });
    };
    let namespace = w.namespace().unwrap_or_default();
    if let Some(receiver) = &source.receiver_ref {
        return from_receiver(w, &namespace, receiver, view, ctx).await;
    }
    let url = match (&source.config_map_key_ref, &source.secret_key_ref) {
        (Some(key), _) => config_map_value(&namespace, key, ctx).await?,
        (None, Some(key)) => secret_value(&namespace, key, ctx).await?,
        // The schema allows exactly one of the three.
        (None, None) => return Err(Invalid::UrlFrom("names nothing".to_owned()).into()),
    };
    Ok(Delivery {
        url: checked_url(url.trim(), "the value")?,
        receiver_secret: None,
    })
}

async fn config_map_value(namespace: &str, key: &KeyRef, ctx: &Context) -> Result<String, Error> {
    let what = format!("ConfigMap {namespace}/{} key {:?}", key.name, key.key);
    let map = match Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&key.name)
        .await
    {
        Ok(map) => map,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Err(Error::UrlSourceNotFound {
                what: format!(
                    "{what} (the operator may not read ConfigMaps: chart value urlFrom.configMaps)"
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };
    map.and_then(|m| m.data)
        .and_then(|mut data| data.remove(&key.key))
        .ok_or(Error::UrlSourceNotFound { what })
}

async fn secret_value(namespace: &str, key: &KeyRef, ctx: &Context) -> Result<String, Error> {
    match ctx
        .secret_reader()
        .value(namespace, &key.name, &key.key)
        .await
    {
        Ok((value, _)) => Ok(value),
        Err(
            Error::SecretNotFound { .. } | Error::SecretInvalid(SecretProblem::MissingKey { .. }),
        ) => Err(Error::UrlSourceNotFound {
            what: format!("Secret {namespace}/{} key {:?}", key.name, key.key),
        }),
        Err(e) => Err(e),
    }
}

/// An absolute http(s) URL with a host and no credentials, or why not.
fn checked_url(url: &str, what: &str) -> Result<String, Error> {
    let refuse = |why: &str| Error::from(Invalid::UrlFrom(format!("{what} {url:?} {why}")));
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse("is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(refuse("is not an absolute http:// or https:// URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("carries a user name or password"));
    }
    Ok(url.to_owned())
}

fn receiver_api(ctx: &Context, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(RECEIVER_GROUP, RECEIVER_VERSION, "Receiver");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "receivers");
    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
}

/// The Receiver's URL under its base, and its token unless the Webhook signs with its own.
async fn from_receiver(
    w: &Webhook,
    namespace: &str,
    reference: &ReceiverRef,
    view: &View,
    ctx: &Context,
) -> Result<Delivery, Error> {
    let what = format!("Receiver {namespace}/{}", reference.name);
    let not_ready = |message: String| Error::ReceiverNotReady {
        what: what.clone(),
        message,
    };
    let receiver = match receiver_api(ctx, namespace).get_opt(&reference.name).await {
        Ok(Some(receiver)) => receiver,
        Ok(None) => return Err(not_ready("it does not exist".to_owned())),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
            // 404 on the kind: Flux's CRDs are not installed.
            return Err(not_ready(format!(
                "the operator cannot read Flux Receivers here ({}): install Flux's notification-controller, and give the operator read access to receivers.notification.toolkit.fluxcd.io (chart value fluxReceivers.enabled)",
                e.message
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let found = Found::of(&receiver.data);
    let own = w.spec.settings.secret_ref.as_ref();
    // A Webhook's own secret verifies only if it is the Receiver's token.
    let same_token = own.is_none_or(|s| Some(&s.name) == found.secret.as_ref() && s.key == "token");
    fits(&found.type_, view.spec.flavor, same_token)?;
    let path = found.ready_path().map_err(not_ready)?;
    let base = reference
        .base_url
        .as_deref()
        .or(view.spec.receiver_base_url.as_deref())
        .ok_or_else(|| {
            Invalid::UrlFrom(format!(
                "receiverRef {} has no baseURL and connection {} no receiverBaseURL: set where Bitbucket reaches the notification-controller's receiver (its ingress)",
                reference.name,
                view.name()
            ))
        })?;
    let url = checked_url(
        &format!("{}{path}", base.trim_end_matches('/')),
        "the Receiver's URL",
    )?;
    // Only a "bitbucket" Receiver checks a signature; a "generic" one needs none (and Post
    // Webhooks could not send one).
    let own = &w.spec.settings.secret_ref;
    let receiver_secret = match (own, found.type_.as_str(), &found.secret) {
        (Some(_), _, _) | (None, "generic", _) => None,
        // The Receiver's token: its Secret's key "token".
        (None, _, Some(secret)) => {
            Some(dereference::secret_at(ctx, namespace, secret, "token").await?)
        }
        (None, _, None) => {
            return Err(not_ready(
                "it names no token Secret (spec.secretRef)".to_owned(),
            ));
        }
    };
    Ok(Delivery {
        url,
        receiver_secret,
    })
}

/// What the operator reads of a Receiver.
#[derive(Debug, PartialEq)]
struct Found {
    type_: String,
    secret: Option<String>,
    ready: Option<(String, String)>,
    path: String,
    current: bool,
}

impl Found {
    fn of(data: &Value) -> Found {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let conditions = data["status"]["conditions"].as_array();
        let ready = conditions
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| (text(&c["status"]), text(&c["message"])));
        let generation = data["metadata"]["generation"].as_i64();
        let observed = data["status"]["observedGeneration"].as_i64();
        Found {
            type_: text(&data["spec"]["type"]),
            secret: data["spec"]["secretRef"]["name"]
                .as_str()
                .map(str::to_owned),
            ready,
            path: text(&data["status"]["webhookPath"]),
            current: observed.is_none() || generation.is_none() || observed == generation,
        }
    }

    /// The Receiver's path once the notification-controller made it Ready for its spec.
    fn ready_path(&self) -> Result<&str, String> {
        match &self.ready {
            Some((status, _)) if status == "True" && self.current && !self.path.is_empty() => {
                Ok(&self.path)
            }
            Some((status, message)) if status != "True" => {
                Err(format!("it is not Ready: {message}"))
            }
            _ => Err("the notification-controller has not given it a webhookPath yet".to_owned()),
        }
    }
}

/// Whether a Receiver of `type_` can verify what a `flavor` hook sends: "bitbucket" checks
/// the X-Hub-Signature that Cloud and Data Center send; "generic" checks nothing (its
/// path is the secret). Post Webhooks signs nothing.
fn fits(type_: &str, flavor: Flavor, same_token: bool) -> Result<(), Invalid> {
    match (type_, flavor) {
        ("generic", _) => Ok(()),
        ("bitbucket", Flavor::Cloud | Flavor::DataCenter) if same_token => Ok(()),
        ("bitbucket", Flavor::Cloud | Flavor::DataCenter) => Err(Invalid::UrlFrom(
            "a Receiver of type bitbucket verifies deliveries with its own token: remove spec.secretRef so Bitbucket signs with it".to_owned(),
        )),
        ("bitbucket", Flavor::PostWebhooks) => Err(Invalid::UrlFrom(
            "a Receiver of type bitbucket verifies X-Hub-Signature, which Post Webhooks for Bitbucket does not send: use a Receiver of type generic".to_owned(),
        )),
        (other, _) => Err(Invalid::UrlFrom(format!(
            "a Receiver of type {other:?} cannot verify Bitbucket's deliveries: use type bitbucket (Cloud, Data Center) or generic"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receiver(type_: &str, ready: Option<&str>, path: &str, observed: i64) -> Value {
        let mut data = json!({
            "metadata": { "generation": 2 },
            "spec": { "type": type_, "secretRef": { "name": "token" } },
            "status": { "webhookPath": path, "observedGeneration": observed },
        });
        if let Some(status) = ready {
            data["status"]["conditions"] =
                json!([{ "type": "Ready", "status": status, "message": "Token not found" }]);
        }
        data
    }

    #[test]
    fn only_a_ready_receiver_for_its_spec_gives_a_path() {
        let ok = Found::of(&receiver("bitbucket", Some("True"), "/hook/abc", 2));
        assert_eq!(ok.ready_path(), Ok("/hook/abc"));
        assert_eq!(ok.secret.as_deref(), Some("token"));
        let table = [
            (
                Some("False"),
                "/hook/abc",
                2,
                "it is not Ready: Token not found",
            ),
            (None, "", 2, "has not given it a webhookPath"),
            (Some("True"), "", 2, "has not given it a webhookPath"),
            // Ready for the spec before an edit: its path may be about to change.
            (
                Some("True"),
                "/hook/abc",
                1,
                "has not given it a webhookPath",
            ),
        ];
        for (ready, path, observed, says) in table {
            let found = Found::of(&receiver("bitbucket", ready, path, observed));
            let said = found.ready_path().expect_err("not ready");
            assert!(said.contains(says), "{said}");
        }
    }

    #[test]
    fn receiver_types_must_verify_what_the_flavor_sends() {
        assert!(fits("bitbucket", Flavor::Cloud, true).is_ok());
        assert!(fits("bitbucket", Flavor::DataCenter, true).is_ok());
        assert!(fits("generic", Flavor::PostWebhooks, false).is_ok());
        for (type_, flavor, same, says) in [
            ("bitbucket", Flavor::PostWebhooks, true, "does not send"),
            ("bitbucket", Flavor::Cloud, false, "remove spec.secretRef"),
            ("github", Flavor::Cloud, true, "cannot verify"),
        ] {
            let said = fits(type_, flavor, same).expect_err("refused").to_string();
            assert!(said.contains(says), "{type_} {flavor:?}: {said}");
        }
    }

    #[test]
    fn urls_from_a_source_are_checked_like_url() {
        assert!(checked_url("https://ci.example.com/hook", "v").is_ok());
        for bad in [
            "ci.example.com",
            "ftp://x/y",
            "https://u:p@x/y",
            "mailto:ci@example.com",
        ] {
            assert!(checked_url(bad, "v").is_err(), "{bad}");
        }
    }
}
