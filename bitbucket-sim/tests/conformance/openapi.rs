//! Just enough OpenAPI 3.0 to check an answer against a documented operation: the status
//! must be documented, and the body must match the response schema ($ref, allOf, type,
//! required, properties, additionalProperties: false, items, enum, minItems, uniqueItems,
//! nullable, readOnly/writeOnly). Written here rather than taken from a JSON Schema crate
//! because OpenAPI 3.0's dialect (nullable, writeOnly, discriminator) is not JSON Schema.

use serde_json::Value;

pub struct Spec {
    doc: Value,
    /// Path prefix the spec's server URL adds (Data Center: "/rest").
    prefix: &'static str,
}

impl Spec {
    pub fn load(file: &str, prefix: &'static str) -> Spec {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/specs")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Spec {
            doc: serde_json::from_str(&text).expect("spec is JSON"),
            prefix,
        }
    }

    /// An inline document (for APIs without a published spec).
    pub fn inline(doc: Value) -> Spec {
        Spec { doc, prefix: "" }
    }

    /// The spec's path template for a request path template of ours.
    fn operation(&self, template: &str, method: &str) -> Result<&Value, String> {
        let key = template.strip_prefix(self.prefix).unwrap_or(template);
        self.doc["paths"]
            .get(key)
            .and_then(|p| p.get(method.to_ascii_lowercase()))
            .ok_or_else(|| format!("{method} {key} is not in the spec"))
    }

    /// Checks one answer; `Err` lists every mismatch.
    pub fn check(
        &self,
        method: &str,
        template: &str,
        status: u16,
        content_type: Option<&str>,
        body: &Value,
    ) -> Result<(), String> {
        let op = self.operation(template, method)?;
        let responses = &op["responses"];
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .ok_or_else(|| {
                let documented: Vec<&String> = responses.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                format!("{method} {template}: status {status} is not documented (documented: {documented:?})")
            })?;
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.is_null() {
                Ok(())
            } else {
                Err(format!(
                    "{method} {template} {status}: documented without a body, got {body}"
                ))
            };
        };
        let media = |t: &str| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        };
        let got = content_type.map(media).unwrap_or_default();
        let Some((_, entry)) = content.iter().find(|(t, _)| media(t) == got) else {
            return Err(format!(
                "{method} {template} {status}: content type {got:?} is not documented ({:?})",
                content.keys().collect::<Vec<_>>()
            ));
        };
        let mut errors = Vec::new();
        if let Some(schema) = entry.get("schema").filter(|s| !s.is_null()) {
            self.validate(schema, body, "$", &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} {status}: {}",
                errors.join("; ")
            ))
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.trim_start_matches('#');
                self.resolve(self.doc.pointer(pointer).unwrap_or(&Value::Null))
            }
            None => schema,
        }
    }

    pub fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.validate(part, value, at, errors);
            }
        }
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(kind) = schema.get("type").and_then(Value::as_str) {
            let ok = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                errors.push(format!("{at}: expected {kind}, got {value}"));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(object) = value.as_object() {
            let properties = self.properties(schema);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = required.as_str()
                    && !object.contains_key(name)
                {
                    errors.push(format!("{at}: required field {name} is missing"));
                }
            }
            for (name, field) in object {
                match properties.iter().find(|(n, _)| n == name) {
                    Some((_, field_schema)) => {
                        if self.resolve(field_schema).get("writeOnly") == Some(&Value::Bool(true))
                            && !field.is_null()
                        {
                            errors.push(format!(
                                "{at}.{name}: a write-only field appears in an answer"
                            ));
                        }
                        self.validate(field_schema, field, &format!("{at}.{name}"), errors);
                    }
                    None if self.closed(schema) => {
                        errors.push(format!("{at}: field {name} is not in the schema"))
                    }
                    None => {}
                }
            }
        }
        if let Some(items) = value.as_array() {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!("{at}: fewer than {min} items"));
            }
            if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(format!("{at}[{i}]: duplicate {item}"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.validate(item_schema, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
    }

    /// Properties declared directly or through allOf.
    fn properties<'a>(&'a self, schema: &'a Value) -> Vec<(String, &'a Value)> {
        let schema = self.resolve(schema);
        let mut out: Vec<(String, &Value)> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v)).collect())
            .unwrap_or_default();
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(self.properties(part));
        }
        out
    }

    fn closed(&self, schema: &Value) -> bool {
        let schema = self.resolve(schema);
        schema.get("additionalProperties") == Some(&Value::Bool(false))
            && schema.get("allOf").is_none()
    }
}
