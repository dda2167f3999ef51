//! `bitbucket-webhook-operator check FILE...`: offline validation of manifests before
//! Argo CD or Flux applies them. Each of this operator's objects is checked as the API
//! server would (the CRDs' structural schema, then their CEL rules with defaults applied,
//! through kube-cel) and as the reconciler would (events and scope per the flavor of the
//! connection it references, found among the files or given with `--flavor`). Other
//! kinds are passed over. Pure: text in, findings out.

mod node;
mod schema;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{AuthType, Flavor, Webhook, WebhookSet, all_crds};
use crate::reconcile::Invalid;
use crate::reconcile::{check_events, check_spec};

const GROUP: &str = "bitbucket.hooks.dev";

/// Something wrong in a file.
#[derive(Debug, PartialEq)]
pub struct Finding {
    pub file: String,
    pub line: u32,
    /// "Webhook ci-trigger", or empty for the file itself.
    pub object: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.object.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.object, self.message
            )
        }
    }
}

/// What a run found, and what it could not check.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Objects of this operator checked.
    pub checked: usize,
    /// Things worth knowing that are not errors.
    pub notes: Vec<String>,
}

/// One parsed document and where it came from.
struct Doc {
    file: String,
    node: node::Node,
    json: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.json["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn label(&self) -> String {
        format!("{} {}", self.kind(), self.name())
    }

    fn ours(&self) -> bool {
        self.json["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("{GROUP}/")))
    }
}

/// Checks the files (name, content) together: a Webhook's connection may be in another
/// file. `flavor` is the flavor of connections not among them.
pub fn check(files: &[(String, String)], flavor: Option<Flavor>) -> Report {
    let mut report = Report::default();
    let docs = parse(files, &mut report);
    let crds: BTreeMap<String, Value> = all_crds()
        .into_iter()
        .filter_map(|crd| serde_json::to_value(&crd).ok())
        .map(|crd| {
            (
                crd["spec"]["names"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                crd,
            )
        })
        .collect();
    let connections = connection_flavors(&docs);
    let validator = kube_cel::Validator::new();
    for doc in docs.iter().filter(|d| d.ours()) {
        report.checked += 1;
        let mut found = Vec::new();
        let Some(crd) = crds.get(doc.kind()) else {
            found.push((
                "kind".to_owned(),
                format!(
                    "{GROUP} has no kind {:?}: {}",
                    doc.kind(),
                    crds.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
            push(&mut report, doc, found);
            continue;
        };
        if let Some(unserved) = unserved(crd, doc) {
            found.push(("apiVersion".to_owned(), unserved));
            push(&mut report, doc, found);
            continue;
        }
        found.extend(metadata(&doc.json));
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let structural = schema::validate(schema, &doc.json);
        let clean = structural.is_empty();
        found.extend(structural.into_iter().map(|p| (p.path, p.message)));
        if let Err(errors) = validator.validate(schema, &doc.json, None) {
            for e in errors.into_vec() {
                // A rule over a value of the wrong type says nothing the schema did not.
                if clean || e.kind == kube_cel::ErrorKind::ValidationFailure {
                    found.push((e.field_path, e.message));
                }
            }
        }
        if matches!(doc.kind(), "Webhook" | "WebhookSet") {
            let quiet = !found.is_empty();
            let more = semantics(doc, schema, &connections, flavor, quiet, &mut report.notes);
            found.extend(more);
        }
        push(&mut report, doc, found);
    }
    report
}

/// The documents of every file; a file that is not YAML is a finding.
fn parse(files: &[(String, String)], report: &mut Report) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (file, text) in files {
        match node::documents(text) {
            Ok(nodes) => docs.extend(nodes.into_iter().map(|node| Doc {
                file: file.clone(),
                json: node.to_json(),
                node,
            })),
            Err(e) => report.findings.push(Finding {
                file: file.clone(),
                line: line_in(&e),
                object: String::new(),
                message: format!("not YAML: {}", first_line(&e)),
            }),
        }
    }
    docs
}

/// What is wrong with the document's apiVersion, if the CRD does not serve it.
fn unserved(crd: &Value, doc: &Doc) -> Option<String> {
    let served: Vec<&str> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let version = doc.json["apiVersion"].as_str().unwrap_or_default();
    (!served.iter().any(|v| version == format!("{GROUP}/{v}")))
        .then(|| format!("{version} is not served; use {GROUP}/{}", served.join(", ")))
}

fn push(report: &mut Report, doc: &Doc, found: Vec<(String, String)>) {
    for (path, message) in found {
        report.findings.push(Finding {
            file: doc.file.clone(),
            line: doc.node.line_of(&path),
            object: doc.label(),
            message: if path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            },
        });
    }
}

/// The name Kubernetes requires of every object of these kinds (a DNS subdomain).
fn metadata(object: &Value) -> Vec<(String, String)> {
    let meta = &object["metadata"];
    match meta["name"].as_str() {
        None if meta["generateName"].is_string() => Vec::new(),
        None => vec![(
            "metadata.name".to_owned(),
            "Required value: name or generateName is required".to_owned(),
        )],
        Some(name) => {
            let valid = name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if valid {
                Vec::new()
            } else {
                vec![(
                    "metadata.name".to_owned(),
                    format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )]
            }
        }
    }
}

/// (kind, name) -> (namespace, flavor, auth type) of every connection among the files.
type Connections = BTreeMap<(String, String), Vec<(Option<String>, Flavor, Option<AuthType>)>>;

fn connection_flavors(docs: &[Doc]) -> Connections {
    let mut out = Connections::new();
    for doc in docs.iter().filter(|d| d.ours()) {
        if !matches!(
            doc.kind(),
            "BitbucketConnection" | "ClusterBitbucketConnection"
        ) {
            continue;
        }
        let Ok(flavor) = serde_json::from_value::<Flavor>(doc.json["spec"]["flavor"].clone())
        else {
            continue;
        };
        let namespace = doc.json["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned);
        let auth =
            serde_json::from_value::<AuthType>(doc.json["spec"]["auth"]["type"].clone()).ok();
        out.entry((doc.kind().to_owned(), doc.name().to_owned()))
            .or_default()
            .push((namespace, flavor, auth));
    }
    out
}

/// The connection a Webhook or WebhookSet references, if it is among the files: its
/// flavor and auth type.
fn connection_of(doc: &Doc, connections: &Connections) -> Option<(Flavor, Option<AuthType>)> {
    let reference = &doc.json["spec"]["connectionRef"];
    let kind = reference["kind"].as_str().unwrap_or("BitbucketConnection");
    let name = reference["name"].as_str()?;
    let namespace = doc.json["metadata"]["namespace"].as_str();
    let candidates = connections.get(&(kind.to_owned(), name.to_owned()))?;
    candidates
        .iter()
        .find(|(ns, ..)| kind == "ClusterBitbucketConnection" || ns.as_deref() == namespace)
        .or_else(|| candidates.first())
        .map(|(_, f, a)| (*f, *a))
}

/// The flavor of the connection a Webhook or WebhookSet references, if known.
fn flavor_of(doc: &Doc, connections: &Connections, default: Option<Flavor>) -> Option<Flavor> {
    connection_of(doc, connections).map(|(f, _)| f).or(default)
}

/// Cloud scopes that repository and project access tokens (a Bearer connection's usual
/// credential) cannot hold: Atlassian's access-token permission pages offer repository,
/// pull request, webhook, pipeline and runner permissions (project tokens also project),
/// no issue permission.
fn scopes_access_tokens_lack(events: &[String]) -> Vec<(&'static str, Vec<&str>)> {
    let mut out: Vec<(&'static str, Vec<&str>)> = Vec::new();
    for event in events {
        let Some(scope) = bitbucket_events::catalogue::cloud_event_scope(event) else {
            continue;
        };
        if scope != "issue" {
            continue;
        }
        match out.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, names)) => names.push(event),
            None => out.push((scope, vec![event])),
        }
    }
    out
}

/// A warning (not an error: the token may be of another kind) where a Cloud Webhook's
/// events need a scope its Bearer connection's usual tokens cannot hold.
fn scope_warnings(doc: &Doc, events: &[String], connections: &Connections) -> Vec<String> {
    let Some((Flavor::Cloud, Some(AuthType::Bearer))) = connection_of(doc, connections) else {
        return Vec::new();
    };
    scopes_access_tokens_lack(events)
        .into_iter()
        .map(|(scope, names)| {
            format!(
                "{}:{}: {}: warning: {} need the Cloud scope {scope}, which repository and project access tokens cannot hold; Bitbucket will refuse the hook unless the connection's token is a workspace access token or an OAuth token with {scope} (or use an API token with auth.type Basic)",
                doc.file,
                doc.node.line(),
                doc.label(),
                names.join(", ")
            )
        })
        .collect()
}

/// What the reconciler would refuse: events of another flavor (with the right name),
/// a scope the flavor has not, a signature Post Webhooks cannot make. `quiet`: the
/// schema already refused the object, so one that cannot be read says nothing new.
fn semantics(
    doc: &Doc,
    schema: &Value,
    connections: &Connections,
    default: Option<Flavor>,
    quiet: bool,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let defaulted = kube_cel::apply_defaults(schema, &doc.json);
    let flavor = flavor_of(doc, connections, default);
    let events_path = match doc.kind() {
        "WebhookSet" => "spec.template.spec.events",
        _ => "spec.events",
    };
    let Some(flavor) = flavor else {
        notes.push(format!(
            "{}:{}: {}: its connection is not among the files: events are checked against every flavor (--flavor names one)",
            doc.file,
            doc.node.line(),
            doc.label()
        ));
        let events: Vec<String> = serde_json::from_value(
            defaulted
                .pointer(&format!("/{}", events_path.replace('.', "/")))
                .cloned()
                .unwrap_or(Value::Null),
        )
        .unwrap_or_default();
        return events_of_no_flavor(&events, events_path);
    };
    let unreadable = |e: serde_json::Error| {
        if quiet {
            Vec::new()
        } else {
            vec![(
                String::new(),
                format!("cannot be read as a {}: {e}", doc.kind()),
            )]
        }
    };
    let result = match doc.kind() {
        "Webhook" => match serde_json::from_value::<Webhook>(defaulted) {
            Ok(w) => {
                let events = w.spec.settings.events.clone().unwrap_or_default();
                notes.extend(scope_warnings(doc, &events, connections));
                check_spec(&w, flavor)
            }
            Err(e) => return unreadable(e),
        },
        _ => match serde_json::from_value::<WebhookSet>(defaulted) {
            Ok(s) => {
                let events = s.spec.template.spec.events.clone().unwrap_or_default();
                notes.extend(scope_warnings(doc, &events, connections));
                check_events(flavor, s.spec.template.spec.events.as_ref())
            }
            Err(e) => return unreadable(e),
        },
    };
    match result {
        Ok(()) => Vec::new(),
        Err(invalid) => {
            let path = match &invalid {
                Invalid::Events { .. } => events_path,
                Invalid::UnsignedBackend => "spec.secretRef",
                Invalid::Scope(_) => "spec.scope",
                _ => "spec.repository",
            };
            vec![(path.to_owned(), invalid.to_string())]
        }
    }
}

/// Without a flavor: an event no flavor knows, with a hint where one has a close name.
fn events_of_no_flavor(events: &[String], path: &str) -> Vec<(String, String)> {
    let flavors = [Flavor::Cloud, Flavor::DataCenter, Flavor::PostWebhooks];
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let messages: Vec<String> = flavors
            .iter()
            .filter_map(|f| {
                let backend = f.events();
                bitbucket_events::check_event(backend, event).message(event, backend)
            })
            .collect();
        if messages.len() == flavors.len() {
            let best = messages
                .iter()
                .find(|m| m.contains("did you mean"))
                .unwrap_or(&messages[0]);
            out.push((
                format!("{path}[{i}]"),
                format!("no flavor has this event: {best}"),
            ));
        }
    }
    out
}

fn line_in(error: &str) -> u32 {
    error
        .split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests;
