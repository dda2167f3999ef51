//! The CustomResourceDefinitions, generated from the Rust types. `crds/` holds their
//! YAML; a test fails when it is stale.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::{BitbucketConnection, ClusterBitbucketConnection, Webhook, WebhookSet};

/// Every CRD of the operator, in install order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    [
        BitbucketConnection::crd(),
        ClusterBitbucketConnection::crd(),
        Webhook::crd(),
        WebhookSet::crd(),
    ]
    .into_iter()
    .map(unwrap_descriptions)
    .collect()
}

/// The file under `crds/` a CRD is written to: `<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// One CRD as a YAML document.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}

/// Doc comments keep their source line breaks; `kubectl explain` wraps text itself, so
/// lines within a paragraph are joined and only blank-line paragraph breaks stay.
fn unwrap_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        Value::String(text) if key == "description" => *text = unwrap(text),
                        _ => walk(child),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

fn unwrap(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_dir_matches_the_rust_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in [
            root.join("crds"),
            root.join("charts/bitbucket-webhook-operator/files/crds"),
        ] {
            assert_dir_matches(&dir);
        }
    }

    fn assert_dir_matches(dir: &std::path::Path) {
        for crd in all_crds() {
            let path = dir.join(crd_file_name(&crd));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            let generated = crd_yaml(&crd).expect("CRDs render as YAML");
            assert!(
                committed == generated,
                "{} is stale or missing: run `make crds` and commit the result",
                path.display()
            );
        }
        let files = std::fs::read_dir(dir)
            .expect("the CRD directory exists")
            .count();
        assert_eq!(
            files,
            all_crds().len(),
            "crds/ holds a file that no type generates"
        );
    }

    #[test]
    fn descriptions_keep_paragraphs_but_not_line_wraps() {
        assert_eq!(
            unwrap("one\ntwo  three\n\nfour\nfive"),
            "one two three\n\nfour five"
        );
    }

    #[test]
    fn every_schema_property_has_a_description() {
        fn check(path: &str, schema: &Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    let here = format!("{path}.{name}");
                    if prop
                        .get("description")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        missing.push(here.clone());
                    }
                    check(&here, prop, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                check(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in all_crds() {
            let value = serde_json::to_value(&crd).expect("CRD serializes");
            let schema = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            // metadata and apiVersion/kind are Kubernetes' own.
            for field in ["spec", "status"] {
                check(
                    &format!("{}.{field}", crd.spec.names.kind),
                    &schema["properties"][field],
                    &mut missing,
                );
            }
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
