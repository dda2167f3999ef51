//! The chart's operating surface: every value a platform team sets (proxy, security
//! contexts, scheduling, PDB), use as a subchart, RBAC aggregated into `edit` and
//! `view`, and alerts and a dashboard whose queries parse and name metrics the operator
//! really exposes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bitbucket_webhook_operator::api::Flavor;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;
use support::helm::{apply, chart, documents, of_kind, one, render, try_render};
use support::{World, metrics_url, plane, repo_path};

/// Values a platform team sets, each as cert-manager and external-secrets name it.
const EVERY_VALUE: &str = r#"
global: {imageRegistry: registry.corp.example}
replicaCount: 2
extraArgs: ["--log-level=info,bitbucket_webhook_operator=debug"]
extraEnv:
- {name: HTTPS_PROXY, value: "http://proxy.corp.example:3128"}
- {name: NO_PROXY, value: ".corp.example,10.0.0.0/8"}
volumes:
- name: corp-ca
  configMap: {name: corp-ca}
volumeMounts:
- {name: corp-ca, mountPath: /etc/corp-ca, readOnly: true}
podSecurityContext:
  runAsNonRoot: true
  runAsUser: 1000680000
  fsGroup: 1000680000
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
priorityClassName: system-cluster-critical
topologySpreadConstraints:
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector: {matchLabels: {app.kubernetes.io/name: bitbucket-webhook-operator}}
strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 0}}
podAnnotations: {example.com/owner: platform}
podLabels: {team: platform}
podDisruptionBudget: {enabled: true}
grafanaDashboard: {enabled: true}
metrics: {perWebhook: false}
"#;

fn values_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("bbwo-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, text).expect("write values");
    path
}

fn deployment(docs: &[Value]) -> &Value {
    one(docs, "Deployment")
}

fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn every_value_renders_and_the_api_server_accepts_it() {
    let ns = plane().namespace("chart-values").expect("namespace");
    let file = values_file("every", EVERY_VALUE);
    let manifests = try_render(
        &chart(),
        "all",
        &ns,
        &["-f", file.to_str().expect("utf-8 path")],
    )
    .expect("renders");
    let docs = documents(&manifests);
    let d = deployment(&docs);
    let pod = &d["spec"]["template"];
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 1000680000);
    assert_eq!(
        pod["spec"]["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(pod["spec"]["volumes"][0]["configMap"]["name"], "corp-ca");
    let c = container(&docs);
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/corp-ca");
    assert_eq!(
        c["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let env: BTreeMap<&str, &str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(
        env.get("HTTPS_PROXY"),
        Some(&"http://proxy.corp.example:3128")
    );
    assert_eq!(env.get("NO_PROXY"), Some(&".corp.example,10.0.0.0/8"));
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for arg in [
        "--log-level=info,bitbucket_webhook_operator=debug",
        "--per-webhook-metrics=false",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    assert_eq!(
        one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        1,
        "two replicas: one may go"
    );
    let dashboard = one(&docs, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["bitbucket-webhook-operator.json"]
        .as_str()
        .expect("dashboard");
    let parsed: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(parsed["uid"], "bitbucket-webhook-operator");

    let applied = apply(&manifests, true);
    assert!(
        applied.contains(
            "poddisruptionbudget.policy/all-bitbucket-webhook-operator serverside-applied"
        ),
        "{applied}"
    );
    assert!(
        applied.contains("configmap/all-bitbucket-webhook-operator-dashboard serverside-applied"),
        "{applied}"
    );
    let _ = std::fs::remove_file(file);
}

/// One replica with `minAvailable: 1` would block every node drain.
#[test]
fn a_disruption_budget_never_blocks_a_drain() {
    let pdbs = |sets: &[&str]| {
        of_kind(
            &documents(&render("pdb", "default", sets)),
            "PodDisruptionBudget",
        )
        .len()
    };
    assert_eq!(
        pdbs(&["podDisruptionBudget.enabled=true"]),
        0,
        "one replica: none"
    );
    assert_eq!(
        pdbs(&["podDisruptionBudget.enabled=true", "replicaCount=2"]),
        1
    );
    let docs = documents(&render(
        "pdb",
        "default",
        &[
            "podDisruptionBudget.enabled=true",
            "podDisruptionBudget.maxUnavailable=1",
        ],
    ));
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none());
}

/// The README's OpenShift install: no fixed UID by default (the SCC assigns one), and the
/// seccomp profile can be left to the SCC where the older `restricted` SCC refuses it.
#[test]
fn the_openshift_install_sets_no_uid_and_can_drop_the_seccomp_profile() {
    let ns = plane().namespace("chart-openshift").expect("namespace");
    let manifests = render(
        "oc",
        &ns,
        &[
            "podSecurityContext.seccompProfile=null",
            "installCRDs=false",
        ],
    );
    let docs = documents(&manifests);
    let pod = &deployment(&docs)["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["securityContext"].get("seccompProfile").is_none(),
        "{pod}"
    );
    assert!(!manifests.contains("runAsUser"));
    assert_eq!(
        container(&docs)["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    apply(&manifests, true);
}

/// Helm hands a subchart the umbrella's `global` values; the schema must let them in.
#[test]
fn the_chart_works_as_a_subchart_with_global_values() {
    let umbrella = std::env::temp_dir().join(format!("bbwo-umbrella-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&umbrella);
    std::fs::create_dir_all(umbrella.join("charts")).expect("umbrella dir");
    std::fs::write(
        umbrella.join("Chart.yaml"),
        "apiVersion: v2\nname: platform\nversion: 1.0.0\n",
    )
    .expect("Chart.yaml");
    std::fs::write(
        umbrella.join("values.yaml"),
        "global:\n  imageRegistry: registry.corp.example\n  imagePullSecrets: [corp]\n\
         bitbucket-webhook-operator:\n  replicaCount: 2\n",
    )
    .expect("values.yaml");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(chart())
        .arg(umbrella.join("charts"))
        .status()
        .expect("cp runs");
    assert!(copied.success());
    let manifests =
        try_render(&umbrella, "platform", "default", &[]).expect("renders as a subchart");
    let docs = documents(&manifests);
    assert_eq!(deployment(&docs)["spec"]["replicas"], 2);
    let _ = std::fs::remove_dir_all(&umbrella);
}

/// Whoever is bound to `edit` in a namespace manages its Webhooks and connections there
/// (and nowhere else); `view` reads them. Kubernetes' aggregation controller folds the
/// chart's roles into the built-in ones.
#[tokio::test]
async fn namespace_editors_and_viewers_get_webhooks_through_aggregated_roles() {
    let p = plane();
    let docs = documents(&render("agg", "default", &[]));
    let roles: Vec<String> = of_kind(&docs, "ClusterRole")
        .into_iter()
        .filter(|r| {
            r["metadata"]["labels"].as_object().is_some_and(|l| {
                l.keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to"))
            })
        })
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert_eq!(roles.len(), 2, "an edit and a view role");
    apply(&roles.join("\n---\n"), false);

    let ns = p.namespace("chart-edit").expect("namespace");
    let other = p.namespace("chart-edit-other").expect("namespace");
    p.kubectl_ok([
        "create",
        "rolebinding",
        "alice-edits",
        "--clusterrole=edit",
        "--user=alice",
        "-n",
        &ns,
    ])
    .expect("binding");
    p.kubectl_ok([
        "create",
        "rolebinding",
        "bob-views",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        &ns,
    ])
    .expect("binding");
    let can = |user: &str, verb: &str, namespace: &str| {
        p.kubectl_ok([
            "auth",
            "can-i",
            verb,
            "webhooks.bitbucket.hooks.dev",
            "-n",
            namespace,
            "--as",
            user,
        ])
        .is_ok_and(|out| out.trim() == "yes")
    };
    // The aggregation controller updates `edit` and `view` shortly after the roles appear.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(can("alice", "create", &ns) && can("bob", "list", &ns)) {
        assert!(
            Instant::now() < deadline,
            "edit/view never gained the chart's rules"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let manifest = "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {token: x}\n---\n\
        apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: BitbucketConnection\nmetadata: {name: bitbucket}\n\
        spec: {flavor: Cloud, baseURL: \"https://api.bitbucket.org/2.0\", auth: {type: Bearer, secretRef: {name: token}}}\n---\n\
        apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {name: ci}\n\
        spec: {connectionRef: {name: bitbucket}, repository: acme/api, url: \"https://ci.example.com/x\", events: [\"repo:push\"]}\n---\n\
        apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: WebhookSet\nmetadata: {name: many}\n\
        spec: {connectionRef: {name: bitbucket}, repositories: [acme/web], template: {spec: {url: \"https://ci.example.com/y\"}}}\n";
    let as_user = |user: &str, namespace: &str, args: &[&str], input: &str| {
        let mut all = vec!["--as", user, "-n", namespace];
        all.extend_from_slice(args);
        let out = p.kubectl_stdin(all, input).expect("kubectl runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = as_user("alice", &ns, &["apply", "-f", "-"], manifest);
    assert!(ok, "an editor creates a connection and a Webhook: {out}");
    let (ok, out) = as_user(
        "bob",
        &ns,
        &["get", "webhooks,webhooksets,bbconn", "-o", "name"],
        "",
    );
    assert!(
        ok && out.contains("webhook.bitbucket.hooks.dev/ci")
            && out.contains("webhookset.bitbucket.hooks.dev/many"),
        "a viewer lists them: {out}"
    );
    let (ok, out) = as_user("bob", &ns, &["delete", "webhook", "ci"], "");
    assert!(
        !ok && out.contains("forbidden"),
        "a viewer deletes nothing: {out}"
    );
    let (ok, out) = as_user("alice", &other, &["get", "webhooks"], "");
    assert!(
        !ok && out.contains("forbidden"),
        "no rights in another namespace: {out}"
    );
    let (ok, out) = as_user("alice", &ns, &["delete", "webhook", "ci"], "");
    assert!(ok, "an editor deletes: {out}");
}

/// Metric names and label names of a PromQL expression's selectors.
#[derive(Default)]
struct Selectors(Vec<(String, Vec<String>)>);

impl ExprVisitor for Selectors {
    type Error = ();

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        if let Some(name) = &vs.name {
            let labels = vs
                .matchers
                .matchers
                .iter()
                .map(|m| m.name.clone())
                .collect();
            self.0.push((name.clone(), labels));
        }
        Ok(true)
    }
}

/// Series names on /metrics and the label names each carries; families without a
/// series yet count by their `# TYPE` line.
fn exposed(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let names: Vec<String> = match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name.to_owned()],
            };
            for n in names {
                found.entry(n).or_default();
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = found.entry(line[..end].to_owned()).or_default();
            if let Some(set) = line[end..].strip_prefix('{') {
                for part in set.split("\",") {
                    if let Some((label, _)) = part.split_once("=\"") {
                        labels.insert(label.trim_start_matches(',').to_owned());
                    }
                }
            }
        }
    }
    found
}

/// The alert rules of the chart (with `sets`): (alert, expr, runbook_url).
fn alerts(sets: &[&str]) -> Vec<(String, String, String)> {
    let mut all = vec!["prometheusRule.enabled=true"];
    all.extend_from_slice(sets);
    let docs = documents(&render("alerts", "monitoring", &all));
    one(&docs, "PrometheusRule")["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
                r["annotations"]["runbook_url"]
                    .as_str()
                    .expect("runbook_url")
                    .to_owned(),
            )
        })
        .collect()
}

/// The dashboard's queries, with Grafana's variables given values.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo_path(
        "charts/bitbucket-webhook-operator/files/dashboard.json",
    ))
    .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    // label_values(metric, label) is Grafana's, not PromQL: its metric is checked alone.
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = v["query"]["query"].as_str()
            && let Some(inner) = q.strip_prefix("label_values(")
        {
            queries.push(inner.split(',').next().expect("metric").trim().to_owned());
        }
    }
    queries
        .into_iter()
        .map(|q| {
            q.replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
        })
        .collect()
}

/// Every alert and dashboard query parses as PromQL and names only metrics, and labels,
/// that a running operator serves on /metrics; every alert has its runbook section.
#[tokio::test]
async fn alerts_and_dashboard_query_metrics_the_operator_serves() {
    // A Webhook through the test binary's operator, so per-Webhook series exist.
    let w = World::new("chart-metrics", Flavor::DataCenter).await;
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/x", ""))
        .expect("apply");
    w.wait_ready("ci").await;
    let text = reqwest::get(format!("{}/metrics", metrics_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let served = exposed(&text);

    let per_webhook = alerts(&[]);
    let aggregate = alerts(&["metrics.perWebhook=false"]);
    let mut queries: Vec<(String, String)> = per_webhook
        .iter()
        .chain(&aggregate)
        .map(|(alert, expr, _)| (alert.clone(), expr.clone()))
        .collect();
    queries.extend(
        dashboard_queries()
            .into_iter()
            .map(|q| ("dashboard".to_owned(), q)),
    );
    for (source, query) in &queries {
        let expr = promql_parser::parser::parse(query)
            .unwrap_or_else(|e| panic!("{source}: {query:?} is not PromQL: {e}"));
        let mut selectors = Selectors::default();
        walk_expr(&mut selectors, &expr).expect("walk");
        assert!(!selectors.0.is_empty(), "{source}: {query} selects nothing");
        for (metric, labels) in selectors.0 {
            // Prometheus's own series of each scrape target.
            if metric == "up" {
                continue;
            }
            let series = served
                .get(&metric)
                .unwrap_or_else(|| panic!("{source}: {metric} is not on /metrics:\n{text}"));
            for label in labels {
                assert!(
                    series.is_empty() || series.contains(&label),
                    "{source}: {metric} has no label {label} (it has {series:?})"
                );
            }
        }
    }

    // Each alert has a section in docs/operations.md, and the docs name no other.
    let docs = std::fs::read_to_string(repo_path("docs/operations.md")).expect("docs");
    let section = docs
        .split("\n## Alerts and runbooks\n")
        .nth(1)
        .expect("docs/operations.md has an Alerts and runbooks section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_owned())
        .collect();
    for rules in [&per_webhook, &aggregate] {
        let shipped: BTreeSet<String> = rules.iter().map(|(a, _, _)| a.clone()).collect();
        assert_eq!(
            shipped, documented,
            "the PrometheusRule and docs/operations.md"
        );
        for (alert, _, runbook) in rules {
            assert!(
                runbook.starts_with("https://")
                    && runbook.ends_with(&format!("operations.md#{}", alert.to_lowercase())),
                "{alert}: {runbook}"
            );
        }
    }
}

/// `helm` against the test control plane; (success, stdout + stderr).
fn helm_on_plane(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(support::helm::helm())
        .args(args)
        .arg("--kubeconfig")
        .arg(plane().kubeconfig())
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// docs/operations.md, "CRDs applied before the chart": the test control plane's CRDs
/// were applied with kubectl, as a user's may be.
#[test]
fn helm_installs_over_crds_applied_with_kubectl_as_the_docs_say() {
    let p = plane();
    let ns = p.namespace("chart-install").expect("namespace");
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    let (ok, out) = helm_on_plane(&["install", "first", chart, "-n", &ns]);
    assert!(!ok, "helm refuses CRDs it does not own: {out}");
    assert!(out.contains("invalid ownership metadata"), "{out}");

    // Either leave the CRDs out...
    let (ok, out) = helm_on_plane(&[
        "install",
        "first",
        chart,
        "-n",
        &ns,
        "--set",
        "installCRDs=false",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = helm_on_plane(&["uninstall", "first", "-n", &ns]);
    assert!(ok, "{out}");

    // ...or hand them to the release, after which uninstalling keeps them.
    let crds = [
        "crd/webhooks.bitbucket.hooks.dev",
        "crd/webhooksets.bitbucket.hooks.dev",
        "crd/bitbucketconnections.bitbucket.hooks.dev",
        "crd/clusterbitbucketconnections.bitbucket.hooks.dev",
    ];
    let mut label = vec!["label", "--overwrite"];
    label.extend(crds);
    label.push("app.kubernetes.io/managed-by=Helm");
    p.kubectl_ok(label).expect("label");
    let release_ns = format!("meta.helm.sh/release-namespace={ns}");
    let mut annotate = vec!["annotate", "--overwrite"];
    annotate.extend(crds);
    annotate.extend(["meta.helm.sh/release-name=second", &release_ns]);
    p.kubectl_ok(annotate).expect("annotate");
    let (ok, out) = helm_on_plane(&["install", "second", chart, "-n", &ns]);
    assert!(ok, "{out}");
    let (ok, out) = helm_on_plane(&["uninstall", "second", "-n", &ns]);
    assert!(ok, "{out}");
    let mut get = vec!["get", "-o", "name"];
    get.extend(crds);
    let left = p.kubectl_ok(get).expect("the CRDs are kept");
    assert_eq!(left.lines().count(), 4, "{left}");
}
