//! `--output table`: one line per hook, then each flag with its fix, then the totals.

use std::fmt::Write;

use super::model::Inventory;

/// The table as text.
pub fn render(inventory: &Inventory) -> String {
    let mut rows = vec![[
        "PLACE".to_owned(),
        "ID".to_owned(),
        "TITLE".to_owned(),
        "URL".to_owned(),
        "ACTIVE".to_owned(),
        "HEALTH".to_owned(),
        "MANAGED BY".to_owned(),
        "FLAGS".to_owned(),
    ]];
    for hook in &inventory.hooks {
        let manager = match (&hook.managed_by, inventory.cluster_read) {
            (Some(m), _) => format!("{} {}/{}", m.kind, m.namespace, m.name),
            (None, true) => "-".to_owned(),
            (None, false) => "?".to_owned(),
        };
        let flags: Vec<&str> = hook.flags.iter().map(|f| f.flag.name()).collect();
        rows.push([
            hook.place.name.clone(),
            hook.listed.id.clone(),
            hook.listed.title.clone(),
            hook.listed.url.clone(),
            hook.listed.active.to_string(),
            format!("{:?}", hook.health),
            manager,
            flags.join(","),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    findings(inventory, &mut out);
    out
}

/// Each flag with its fix, the places not read, and the totals.
fn findings(inventory: &Inventory, out: &mut String) {
    for hook in inventory.hooks.iter().filter(|h| !h.flags.is_empty()) {
        let _ = writeln!(out, "\n{} hook {}:", hook.place.name, hook.listed.id);
        for finding in &hook.flags {
            let _ = writeln!(out, "  {}: {}", finding.flag.name(), finding.message);
            let _ = writeln!(out, "    fix: {}", finding.fix);
        }
    }
    for place in inventory.places.iter().filter(|p| p.error.is_some()) {
        let _ = writeln!(
            out,
            "\n{} {}: not read: {}",
            place.place.kind,
            place.place.name,
            place.error.as_deref().unwrap_or_default()
        );
    }
    let t = &inventory.totals;
    let flags: Vec<String> = t
        .by_flag
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} hooks on {} places ({} unreadable), {} managed, {} flagged{}{}",
        t.hooks,
        t.places,
        t.unreadable_places,
        if inventory.cluster_read {
            t.managed.to_string()
        } else {
            "? (cluster not read)".to_owned()
        },
        t.flagged,
        if flags.is_empty() { "" } else { ": " },
        flags.join(", ")
    );
}
