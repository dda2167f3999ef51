//! The shape docs/architecture.md promises, checked on the source: which module may
//! import which, that the reconcilers are reached only through what `reconcile` exports,
//! and that no function in `src/` grows past 80 lines.

use std::path::{Path, PathBuf};

/// The library's top modules, lowest first: each may use only modules before it.
const LAYERS: &[&[&str]] = &[
    &["api", "telemetry"],
    &["metrics"],
    &["bitbucket"],
    &["slots"],
    &["identity"],
    &["health"],
    &["reconcile"],
    &["runtime", "check", "export"],
    &["inventory"],
];

/// The reconcilers: outside `reconcile`, used only through `reconcile`'s own exports.
const RECONCILERS: &[&str] = &["webhook", "webhookset", "connection"];

const LONGEST_FUNCTION: usize = 80;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable source");
            let name = p
                .strip_prefix(&root)
                .expect("under src")
                .display()
                .to_string();
            (name, text)
        })
        .collect()
}

/// The file's code without comments (a doc comment may name any module).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `crate::X` paths in `code`, as X.
fn uses(code: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = &rest[name.len()..];
        let next: String = after
            .strip_prefix("::")
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.push((name, next));
    }
    found
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let mut broken = Vec::new();
    for (file, text) in src() {
        let top = file.split(['/', '.']).next().unwrap_or_default().to_owned();
        let Some(mine) = layer(&top) else {
            continue; // lib.rs, main.rs: the crate's roots wire everything
        };
        for (module, next) in uses(&code(&text)) {
            if module == top {
                continue;
            }
            match layer(&module) {
                Some(theirs) if theirs < mine => {}
                _ => broken.push(format!("{file}: {top} uses crate::{module}")),
            }
            if top != "reconcile" && module == "reconcile" && RECONCILERS.contains(&next.as_str()) {
                broken.push(format!(
                    "{file}: reaches into reconcile::{next} (use what reconcile exports)"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The functions in `text` longer than the limit: (name, first line, lines).
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let head = [
            "pub ",
            "pub(crate) ",
            "pub(super) ",
            "async ",
            "const ",
            "unsafe ",
        ]
        .iter()
        .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
        let head = head.strip_prefix("async ").unwrap_or(head);
        let Some(rest) = head.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i64, false);
        for (offset, body) in lines[start..].iter().enumerate() {
            let body = code(body);
            // Braces inside string literals would miscount; the sources keep them balanced.
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !opened && body.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            if opened && depth <= 0 {
                if offset + 1 > LONGEST_FUNCTION {
                    long.push((name.clone(), start + 1, offset + 1));
                }
                break;
            }
        }
    }
    long
}

#[test]
fn no_function_in_src_is_longer_than_80_lines() {
    let long: Vec<String> = src()
        .iter()
        .flat_map(|(file, text)| {
            long_functions(text)
                .into_iter()
                .map(move |(name, line, n)| format!("{file}:{line}: fn {name} has {n} lines"))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    let x = 1;\n".repeat(LONGEST_FUNCTION);
    let text = format!("pub async fn long() {{\n{body}}}\nfn short() {{}}\n");
    assert_eq!(
        long_functions(&text),
        [("long".to_owned(), 1, LONGEST_FUNCTION + 2)]
    );
}

#[test]
fn the_module_check_sees_paths_but_not_comments() {
    let text = "use crate::reconcile::webhook::x; // crate::runtime\n/// [crate::api]\n";
    assert_eq!(
        uses(&code(text)),
        [("reconcile".to_owned(), "webhook".to_owned())]
    );
}
