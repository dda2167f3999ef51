//! `--output html`: one self-contained page (styles, script and data inline, no request
//! leaves it: its Content-Security-Policy allows none) with totals, charts, a table that
//! sorts and filters, and each flag's fix.

use super::model::Inventory;

const TEMPLATE: &str = include_str!("report.html");
const SLOT: &str = "/*INVENTORY*/";

/// The page for `inventory`.
pub fn render(inventory: &Inventory) -> Result<String, String> {
    let json = serde_json::to_string(inventory).map_err(|e| e.to_string())?;
    // Titles and URLs come from Bitbucket: in a <script> block, "</script>" or "<!--"
    // inside a string would end or change it. JSON may escape any of these characters.
    let json = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    Ok(TEMPLATE.replacen(SLOT, &json, 1))
}
