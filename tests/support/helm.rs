//! The chart as the tests see it: rendered by the helm `make helm` builds, applied with
//! kubectl, read back as documents.

use std::path::PathBuf;
use std::process::Command;

use super::{plane, repo_path};

pub fn helm() -> PathBuf {
    let path = std::env::var_os("BBWO_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("BBWO_HELM is not set: run the tests with `make test` (it builds helm from its Go module)"));
    assert!(
        path.is_file(),
        "{} does not exist: run `make helm`",
        path.display()
    );
    path
}

pub fn chart() -> PathBuf {
    repo_path("charts/bitbucket-webhook-operator")
}

/// `helm template` of `chart` into `namespace` with more helm arguments; Err: stderr.
pub fn try_render(
    chart: &std::path::Path,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> Result<String, String> {
    let out = Command::new(helm())
        .args(["template", release])
        .arg(chart)
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of the chart into `namespace` with `--set` values.
pub fn render(release: &str, namespace: &str, sets: &[&str]) -> String {
    let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
    try_render(&chart(), release, namespace, &args)
        .unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"))
}

/// `kubectl apply --server-side` of `manifests` (only validated with `dry_run`).
pub fn apply(manifests: &str, dry_run: bool) -> String {
    let mut args = vec!["apply", "--server-side", "--force-conflicts", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    let out = plane()
        .kubectl_stdin(args, manifests)
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "apply failed:\n{text}");
    text
}

/// The rendered objects, as JSON values.
pub fn documents(manifests: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(manifests)
        .expect("helm renders YAML")
        .into_iter()
        .filter(|d| d.is_object())
        .collect()
}

/// The rendered objects of one kind.
pub fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one rendered object of `kind`.
pub fn one<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}
