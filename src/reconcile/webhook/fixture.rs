//! A Webhook for the step modules' tests.

use crate::api::{Webhook, WebhookSpec};

/// Webhook "w" with connection "c", repository team/app and a CI URL, `overrides` (spec
/// fields) on top, and `annotations`.
pub fn webhook(overrides: serde_json::Value, annotations: &[(&str, &str)]) -> Webhook {
    let mut spec = serde_json::json!({
        "connectionRef": {"name": "c"},
        "repository": "team/app",
        "url": "https://ci.example.com/hook",
    });
    if let (Some(spec), serde_json::Value::Object(fields)) = (spec.as_object_mut(), overrides) {
        spec.extend(fields);
    }
    let spec: WebhookSpec = serde_json::from_value(spec).expect("a valid spec");
    let mut w = Webhook::new("w", spec);
    if !annotations.is_empty() {
        w.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
    }
    w
}
