//! YAML documents with the line of every value, so a finding can say `file:line`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A YAML value and where it starts.
#[derive(Debug)]
pub struct Node(Spanned<Tree>);

#[derive(Debug)]
enum Tree {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        Spanned::deserialize(d).map(Node)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        struct AnyYaml;
        impl<'de> Visitor<'de> for AnyYaml {
            type Value = Tree;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_none<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Tree, E> {
                Ok(Tree::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Tree, E> {
                Ok(Tree::Int(i))
            }
            fn visit_u64<E: de::Error>(self, i: u64) -> Result<Tree, E> {
                i64::try_from(i).map(Tree::Int).map_err(E::custom)
            }
            fn visit_f64<E>(self, f: f64) -> Result<Tree, E> {
                Ok(Tree::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Tree, E> {
                Ok(Tree::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Tree, E> {
                Ok(Tree::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = a.next_element()? {
                    items.push(n);
                }
                Ok(Tree::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry::<String, Node>()? {
                    entries.push(entry);
                }
                Ok(Tree::Map(entries))
            }
        }
        d.deserialize_any(AnyYaml)
    }
}

impl Node {
    /// The 1-based line the value starts on.
    pub fn line(&self) -> u32 {
        u32::try_from(self.0.referenced.line()).unwrap_or(u32::MAX)
    }

    /// The value as JSON (the API server's view of the document).
    pub fn to_json(&self) -> Value {
        match &self.0.value {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(*b),
            Tree::Int(i) => Value::from(*i),
            Tree::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Tree::Str(s) => Value::String(s.clone()),
            Tree::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Tree::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The line of the value at a field path ("spec.events[1]", "spec.connectionRef"):
    /// the deepest part of the path that exists (a missing field: its parent's line).
    pub fn line_of(&self, path: &str) -> u32 {
        let mut node = self;
        for part in path_parts(path) {
            let next = match (&node.0.value, part) {
                (Tree::Map(entries), Part::Key(key)) => {
                    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
                }
                (Tree::Seq(items), Part::Index(i)) => items.get(i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.line()
    }
}

enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

/// "spec.events[1]" -> spec, events, 1.
fn path_parts(path: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, rest) = segment.split_once('[').unwrap_or((segment, ""));
        if !key.is_empty() {
            parts.push(Part::Key(key));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                parts.push(Part::Index(i));
            }
        }
    }
    parts
}

/// Every document of a YAML stream (empty documents dropped).
pub fn documents(text: &str) -> Result<Vec<Node>, String> {
    let docs: Vec<Option<Node>> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_knows_its_line() {
        let text =
            "kind: Webhook\nspec:\n  url: x\n  events:\n  - a\n  - b\n---\n\n---\nkind: Other\n";
        let docs = documents(text).expect("parses");
        assert_eq!(docs.len(), 2, "the empty document is dropped");
        assert_eq!(docs[0].line_of("spec.url"), 3);
        assert_eq!(docs[0].line_of("spec.events[1]"), 6);
        assert_eq!(docs[0].line_of("spec.missing"), 3, "the parent's line");
        assert_eq!(docs[1].line_of("kind"), 10);
        assert_eq!(docs[0].to_json()["spec"]["events"][1], "b");
        let err = documents("a: [1, 2\nb: 3\n").expect_err("malformed");
        assert!(err.contains("line 2"), "{err}");
    }
}
