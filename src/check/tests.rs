use super::*;

const CONNECTION: &str = "apiVersion: bitbucket.hooks.dev/v1alpha1
kind: BitbucketConnection
metadata: {name: dc}
spec:
  flavor: DataCenter
  baseURL: https://bitbucket.example.com
  auth: {type: Bearer, secretRef: {name: t}}
";

fn webhook(spec: &str) -> String {
    format!(
        "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: w}}\nspec:\n  connectionRef: {{name: dc}}\n{spec}"
    )
}

fn run(text: &str) -> Vec<String> {
    let files = vec![
        ("connection.yaml".to_owned(), CONNECTION.to_owned()),
        ("hooks.yaml".to_owned(), text.to_owned()),
    ];
    check(&files, None)
        .findings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn good_manifests_pass_and_others_kinds_are_passed_over() {
    let good = webhook(
        "  repository: PLAT/api\n  url: https://ci.example.com/hook\n  events: [repo:refs_changed]\n",
    );
    let text = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n---\n{good}");
    assert_eq!(run(&text), Vec::<String>::new());
    let report = check(&[("a.yaml".to_owned(), text)], Some(Flavor::DataCenter));
    assert_eq!(report.checked, 1);
}

#[test]
fn each_problem_names_file_line_object_and_field() {
    // (spec lines, what the finding says)
    let table = [
        (
            "  repository: PLAT/api\n  url: https://ci.example.com/hook\n  events: [repo:push]\n",
            "hooks.yaml:8: Webhook w: spec.events: event repo:push is a Cloud event, not a DataCenter one (did you mean repo:refs_changed?)",
        ),
        (
            "  repository: PLAT/api\n  url: https://user:pw@ci.example.com/hook\n",
            "hooks.yaml:7: Webhook w: spec.url: url must not contain a user name or password",
        ),
        (
            "  repository: PLAT\n  url: https://ci.example.com/hook\n",
            "hooks.yaml:5: Webhook w: spec: repository must look like",
        ),
        (
            "  repository: acme\n  scope: Workspace\n  url: https://ci.example.com/hook\n",
            "hooks.yaml:7: Webhook w: spec.scope: the DataCenter flavor has no workspaces",
        ),
        (
            "  repository: PLAT/api\n  url: https://ci.example.com/hook\n  colour: blue\n",
            "hooks.yaml:8: Webhook w: spec.colour: unknown field \"spec.colour\"",
        ),
        (
            "  repository: PLAT/api\n",
            "hooks.yaml:5: Webhook w: spec: set exactly one of url and urlFrom",
        ),
        (
            "  repository: PLAT/api\n  url: https://ci.example.com/hook\n  deletionPolicy: Keep\n",
            "spec.deletionPolicy: Unsupported value: \"Keep\"",
        ),
    ];
    for (spec, expected) in table {
        let found = run(&webhook(spec));
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "{expected:?} not in {found:#?}"
        );
    }
}

#[test]
fn without_the_connection_events_are_checked_against_every_flavor() {
    let text = webhook(
        "  repository: PLAT/api\n  url: https://ci.example.com/hook\n  events: [repo:pushed, pr:opened]\n",
    );
    let report = check(&[("h.yaml".to_owned(), text)], None);
    let found: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("spec.events[0]") && found[0].contains("did you mean repo:push"),
        "{found:#?}"
    );
    assert!(report.notes[0].contains("not among the files"));
}

#[test]
fn broken_yaml_and_foreign_versions_say_where() {
    let report = check(
        &[("bad.yaml".to_owned(), "a: [1, 2\nb: 3\n".to_owned())],
        None,
    );
    assert_eq!(report.findings[0].file, "bad.yaml");
    assert_eq!(report.findings[0].line, 2);
    let found = run("apiVersion: bitbucket.hooks.dev/v1\nkind: Webhook\nmetadata: {name: w}\n");
    assert!(found[0].contains("is not served"), "{found:?}");
    let found = run("apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Hook\nmetadata: {name: w}\n");
    assert!(found[0].contains("has no kind \"Hook\""), "{found:?}");
    let found = run(
        &webhook("  repository: PLAT/api\n  url: https://ci.example.com/hook\n")
            .replace("name: w}", "name: Bad_Name}"),
    );
    assert!(
        found[0].contains("metadata.name: Invalid value"),
        "{found:?}"
    );
}

#[test]
fn issue_events_on_a_cloud_access_token_connection_are_warned_about() {
    let connection = |auth: &str| {
        format!(
            "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: BitbucketConnection\nmetadata: {{name: c}}\n\
             spec:\n  flavor: Cloud\n  auth: {{type: {auth}, secretRef: {{name: t}}}}\n---\n"
        )
    };
    let hook = "apiVersion: bitbucket.hooks.dev/v1alpha1\nkind: Webhook\nmetadata: {name: w}\n\
                spec:\n  connectionRef: {name: c}\n  repository: acme/api\n  url: https://ci.example.com/hook\n  \
                events: [repo:push, issue:created, issue:updated]\n";
    let bearer = check(&[("h.yaml".to_owned(), connection("Bearer") + hook)], None);
    assert!(
        bearer.findings.is_empty(),
        "a warning, not an error: {:#?}",
        bearer.findings
    );
    let warnings: Vec<&String> = bearer
        .notes
        .iter()
        .filter(|n| n.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:#?}", bearer.notes);
    assert!(
        warnings[0].contains("issue:created, issue:updated need the Cloud scope issue")
            && warnings[0].contains("Webhook w"),
        "{}",
        warnings[0]
    );
    // An API token (Basic) can hold it: nothing to say.
    let basic = check(&[("h.yaml".to_owned(), connection("Basic") + hook)], None);
    assert!(
        basic.notes.iter().all(|n| !n.contains("warning")),
        "{:#?}",
        basic.notes
    );
}
