//! JSON Schema cleaning for tool parameters.
//!
//! Claude Code's tool schemas (and MCP servers') are full JSON Schema: `$schema`,
//! `additionalProperties: false`, `const`, unions, `$ref`s. Gemini accepts only an OpenAPI
//! subset and answers 400 to anything else; OpenAI takes nearly everything but wants `properties`
//! on every object. The cleaning walks schemas only, never the names of properties: a property
//! called `format` or `title` stays.

use serde_json::{json, Map, Value};

/// Keys Gemini refuses in a schema.
const GEMINI_DROPPED: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$ref",
    "$defs",
    "definitions",
    "additionalProperties",
    "propertyNames",
    "patternProperties",
    "unevaluatedProperties",
    "if",
    "then",
    "else",
    "not",
    "const",
    "minLength",
    "maxLength",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "format",
    "default",
    "examples",
    "title",
    "strict",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
    "enumDescriptions",
    "multipleOf",
];

/// How deep `$ref`s are followed (a recursive schema would never end).
const MAX_REF_DEPTH: usize = 8;

/// The schema as OpenAI's `parameters`: `$schema` dropped, `properties` on every object.
pub fn for_openai(schema: &Value) -> Value {
    fn walk(v: &mut Value) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        obj.shift_remove("$schema");
        if obj.get("type") == Some(&json!("object")) && !obj.contains_key("properties") {
            obj.insert("properties".into(), json!({}));
        }
        for (key, child) in obj.iter_mut() {
            match key.as_str() {
                "properties" | "$defs" | "definitions" => {
                    if let Some(props) = child.as_object_mut() {
                        props.values_mut().for_each(walk);
                    }
                }
                "items" | "additionalProperties" | "not" => walk(child),
                "anyOf" | "oneOf" | "allOf" => {
                    if let Some(a) = child.as_array_mut() {
                        a.iter_mut().for_each(walk);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = if schema.is_object() {
        schema.clone()
    } else {
        json!({"type": "object"})
    };
    walk(&mut out);
    out
}

/// The schema as Gemini's `parameters`.
pub fn for_gemini(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = gemini(schema, &defs, 0);
    if out.get("type").is_none() {
        if let Some(o) = out.as_object_mut() {
            o.insert("type".into(), json!("object"));
        }
    }
    out
}

fn gemini(schema: &Value, defs: &Value, depth: usize) -> Value {
    let Some(src) = schema.as_object() else {
        return json!({"type": "string"});
    };
    // A local `$ref` is replaced by what it points to.
    if let Some(r) = src.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        if depth < MAX_REF_DEPTH {
            if let Some(target) = defs.get(name) {
                let mut resolved = gemini(target, defs, depth + 1);
                if let (Some(d), Some(o)) = (src.get("description"), resolved.as_object_mut()) {
                    o.insert("description".into(), d.clone());
                }
                return resolved;
            }
        }
        return json!({"type": "object", "description": format!("(see {name})")});
    }
    // `allOf`: the members merged into one.
    if let Some(all) = src.get("allOf").and_then(Value::as_array) {
        let mut merged = src.clone();
        merged.remove("allOf");
        for member in all {
            if let Some(m) = member.as_object() {
                for (k, v) in m {
                    match (merged.get_mut(k), v) {
                        (Some(Value::Object(a)), Value::Object(b)) if k == "properties" => {
                            a.extend(b.clone());
                        }
                        (Some(Value::Array(a)), Value::Array(b)) if k == "required" => {
                            a.extend(b.iter().cloned());
                        }
                        (None, _) => {
                            merged.insert(k.clone(), v.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        return gemini(&Value::Object(merged), defs, depth + 1);
    }
    // A union: `X | null` becomes a nullable X; otherwise the first branch with a type.
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = src.get(key).and_then(Value::as_array) {
            let nullable = branches.iter().any(|b| b["type"] == "null");
            let chosen = branches
                .iter()
                .find(|b| b["type"] != "null")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            let mut out = gemini(&chosen, defs, depth + 1);
            if let Some(o) = out.as_object_mut() {
                if let Some(d) = src.get("description") {
                    o.entry("description").or_insert(d.clone());
                }
                if nullable {
                    o.insert("nullable".into(), json!(true));
                }
            }
            return out;
        }
    }
    let mut out = Map::new();
    for (key, value) in src {
        if GEMINI_DROPPED.contains(&key.as_str()) || key.starts_with("x-") {
            continue;
        }
        match key.as_str() {
            "type" => match value {
                // `["string", "null"]`: the first real type, nullable.
                Value::Array(types) => {
                    let first = types
                        .iter()
                        .find(|t| *t != "null")
                        .cloned()
                        .unwrap_or(json!("string"));
                    out.insert("type".into(), first);
                    if types.iter().any(|t| t == "null") {
                        out.insert("nullable".into(), json!(true));
                    }
                }
                v => {
                    out.insert("type".into(), v.clone());
                }
            },
            "properties" => {
                let props: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), gemini(s, defs, depth + 1)))
                    .collect();
                out.insert("properties".into(), Value::Object(props));
            }
            "items" => {
                out.insert("items".into(), gemini(value, defs, depth + 1));
            }
            "enum" => {
                // Gemini enums are strings, never empty ones.
                let values: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .filter(|s| !s.is_empty())
                    .map(Value::String)
                    .collect();
                out.insert("enum".into(), Value::Array(values));
                out.insert("type".into(), json!("string"));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(c) = src.get("const") {
        let c = match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert("enum".into(), json!([c]));
        out.insert("type".into(), json!("string"));
    }
    // `required` may only name properties that exist.
    if let Some(req) = out.get("required").and_then(Value::as_array).cloned() {
        let known = out.get("properties").and_then(Value::as_object);
        let kept: Vec<Value> = req
            .into_iter()
            .filter(|r| known.is_some_and(|p| r.as_str().is_some_and(|n| p.contains_key(n))))
            .collect();
        if kept.is_empty() {
            out.remove("required");
        } else {
            out.insert("required".into(), Value::Array(kept));
        }
    }
    if out.get("type") == Some(&json!("array")) && !out.contains_key("items") {
        out.insert("items".into(), json!({"type": "string"}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_schema_keeps_property_names_that_look_like_keywords() {
        let s = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "format": {"type": "string", "format": "uri", "minLength": 1},
                "title": {"type": ["string", "null"]},
                "mode": {"const": "fast"},
                "level": {"enum": [1, 2, ""]},
                "when": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "d"},
                "tags": {"type": "array"},
                "ref": {"$ref": "#/$defs/Thing"}
            },
            "required": ["format", "ghost"],
            "$defs": {"Thing": {"type": "object", "properties": {"x": {"type": "string"}}}}
        });
        let g = for_gemini(&s);
        assert_eq!(
            g,
            json!({
                "type": "object",
                "properties": {
                    "format": {"type": "string"},
                    "title": {"type": "string", "nullable": true},
                    "mode": {"enum": ["fast"], "type": "string"},
                    "level": {"enum": ["1", "2"], "type": "string"},
                    "when": {"type": "integer", "description": "d", "nullable": true},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "ref": {"type": "object", "properties": {"x": {"type": "string"}}}
                },
                "required": ["format"]
            })
        );
    }

    #[test]
    fn openai_schema_gets_properties_on_objects() {
        let s = json!({"$schema": "x", "type": "object", "properties": {"o": {"type": "object"}}});
        assert_eq!(
            for_openai(&s),
            json!({"type": "object", "properties": {"o": {"type": "object", "properties": {}}}})
        );
    }
}
