//! Pure: an object against a CRD's structural schema (the OpenAPI v3 subset Kubernetes
//! allows): types, required fields, unknown fields, enums, lengths, patterns, bounds and
//! list sets, with the API server's words where it has them. CEL rules are checked apart
//! (kube-cel), on the object with the schema's defaults applied.

use serde_json::Value;

/// One thing wrong, at a field path ("spec.events[0]").
#[derive(Debug, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Everything the schema refuses in `value`.
pub fn validate(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    walk(schema, value, "", &mut problems);
    problems
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
    let mut problem = |message: String| {
        out.push(Problem {
            path: path.to_owned(),
            message,
        })
    };
    if value.is_null() {
        if !schema["nullable"].as_bool().unwrap_or(false) && schema.get("type").is_some() {
            problem(format!(
                "Invalid value: \"null\": {path} in body must be of type {}",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    if let Some(expected) = schema["type"].as_str() {
        let actual = type_name(value);
        let fits = actual == expected || (expected == "number" && actual == "integer");
        if !fits {
            problem(format!(
                "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(Value::to_string).collect();
        problem(format!(
            "Unsupported value: {value}: supported values: {}",
            supported.join(", ")
        ));
    }
    match value {
        Value::String(s) => string(schema, s, path, &mut problem),
        Value::Number(n) => number(schema, n, path, &mut problem),
        Value::Array(items) => array(schema, items, path, out),
        Value::Object(fields) => object(schema, fields, path, out),
        Value::Bool(_) | Value::Null => {}
    }
}

fn number(schema: &Value, n: &serde_json::Number, path: &str, problem: &mut impl FnMut(String)) {
    let x = n.as_f64().unwrap_or_default();
    if let Some(min) = schema["minimum"].as_f64()
        && x < min
    {
        problem(format!(
            "Invalid value: {n}: {path} in body should be greater than or equal to {min}"
        ));
    }
    if let Some(max) = schema["maximum"].as_f64()
        && x > max
    {
        problem(format!(
            "Invalid value: {n}: {path} in body should be less than or equal to {max}"
        ));
    }
}

fn array(schema: &Value, items: &[Value], path: &str, out: &mut Vec<Problem>) {
    let mut problem = |message: String| {
        out.push(Problem {
            path: path.to_owned(),
            message,
        })
    };
    if let Some(min) = schema["minItems"].as_u64()
        && (items.len() as u64) < min
    {
        problem(format!(
            "Invalid value: {}: {path} in body should have at least {min} items",
            items.len()
        ));
    }
    if let Some(max) = schema["maxItems"].as_u64()
        && items.len() as u64 > max
    {
        problem(format!(
            "Too many: {}: must have at most {max} items",
            items.len()
        ));
    }
    if schema["x-kubernetes-list-type"] == "set" {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.push(Problem {
                    path: format!("{path}[{i}]"),
                    message: format!("Duplicate value: {item}"),
                });
            }
        }
    }
    for (i, item) in items.iter().enumerate() {
        walk(&schema["items"], item, &format!("{path}[{i}]"), out);
    }
}

fn string(schema: &Value, s: &str, path: &str, problem: &mut impl FnMut(String)) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema["minLength"].as_u64()
        && chars < min
    {
        problem(format!(
            "Invalid value: \"{s}\": {path} in body should be at least {min} chars long"
        ));
    }
    if let Some(max) = schema["maxLength"].as_u64()
        && chars > max
    {
        problem(format!("Too long: may not be more than {max} bytes"));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => problem(format!(
                "Invalid value: \"{s}\": {path} in body should match '{pattern}'"
            )),
            Ok(_) => {}
            Err(e) => problem(format!(
                "the schema's pattern {pattern:?} is not usable: {e}"
            )),
        }
    }
}

fn object(
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<Problem>,
) {
    if let Some(required) = schema["required"].as_array() {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                out.push(Problem {
                    path: join(path, name),
                    message: "Required value".to_owned(),
                });
            }
        }
    }
    let properties = schema["properties"].as_object();
    let preserve = schema["x-kubernetes-preserve-unknown-fields"]
        .as_bool()
        .unwrap_or(false);
    for (key, value) in fields {
        let field_path = join(path, key);
        // Every object has these; the API server checks metadata itself (and `check`
        // the name).
        if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
            continue;
        }
        match (
            properties.and_then(|p| p.get(key)),
            &schema["additionalProperties"],
        ) {
            (Some(sub), _) => walk(sub, value, &field_path, out),
            (None, additional) if additional.is_object() => {
                walk(additional, value, &field_path, out)
            }
            (None, _) if preserve => {}
            (None, _) if properties.is_none() && schema.get("type").is_none() => {}
            (None, _) => out.push(Problem {
                path: field_path.clone(),
                message: format!("unknown field \"{field_path}\""),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_structural_rules_the_api_server_applies() {
        let schema = json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {
                        "url": {"type": "string", "maxLength": 5},
                        "kind": {"type": "string", "enum": ["A", "B"]},
                        "n": {"type": "integer", "minimum": 30},
                        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                 "items": {"type": "string", "pattern": "^[a-z]+$"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "opt": {"type": "object", "nullable": true}
                    }
                }
            }
        });
        let ok = json!({"metadata": {"name": "x", "labels": {"a": "b"}},
                        "spec": {"url": "u", "kind": "A", "n": 31, "tags": ["a"], "labels": {"k": "v"}, "opt": null}});
        assert_eq!(validate(&schema, &ok), vec![]);
        let bad = json!({"spec": {"url": "toolong", "kind": "C", "n": 1, "tags": ["a", "a", "B"],
                                  "labels": {"k": 1}, "extra": true}});
        let found: Vec<String> = validate(&schema, &bad)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let text = found.join("\n");
        for expected in [
            "spec.url: Too long: may not be more than 5 bytes",
            "spec.kind: Unsupported value: \"C\"",
            "spec.n: Invalid value: 1",
            "spec.tags[1]: Duplicate value: \"a\"",
            "spec.tags[2]: Invalid value: \"B\"",
            "spec.labels.k: Invalid value: \"integer\"",
            "spec.extra: unknown field \"spec.extra\"",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        let missing = validate(&schema, &json!({"spec": {}}));
        assert_eq!(missing[0].path, "spec.url");
        assert_eq!(missing[0].message, "Required value");
    }
}
