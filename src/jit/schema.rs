//! A small JSON Schema validator for the subset tool input/output schemas may use.
//!
//! Supported keywords: `type` (one name or an array of names), `properties`, `required`,
//! `additionalProperties` (bool or schema), `items` (one schema), `enum`, `const`,
//! `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`. Annotations
//! (`description`, `title`, `default`, `$schema`) are ignored. Everything else — notably
//! `pattern` — is rejected by [`check_schema`], so a tool never silently relies on a
//! constraint that is not enforced. `true`/`false` are accepted as schemas.

use serde_json::{Map, Value};

const TYPES: &[&str] = &[
    "string", "number", "integer", "boolean", "object", "array", "null",
];
const IGNORED: &[&str] = &["description", "title", "default", "$schema"];

/// Checks that `schema` is a well-formed schema in the supported subset.
///
/// The error names the offending location inside the schema (e.g. `$.properties.path`).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    check_at(schema, "$")
}

fn check_at(schema: &Value, at: &str) -> Result<(), String> {
    let obj = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(obj) => obj,
        other => {
            return Err(format!(
                "{at}: a schema must be an object or a boolean, got {}",
                type_name(other)
            ))
        }
    };
    for (key, value) in obj {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "type" => check_type_keyword(value, &here)?,
            "properties" => {
                let props = value
                    .as_object()
                    .ok_or_else(|| format!("{here}: must be an object of schemas"))?;
                for (name, sub) in props {
                    check_at(sub, &format!("{here}{}", prop_path(name)))?;
                }
            }
            "required" => {
                let ok = value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string));
                if !ok {
                    return Err(format!("{here}: must be an array of strings"));
                }
            }
            "additionalProperties" | "items" => {
                if key == "items" && value.is_array() {
                    return Err(format!(
                        "{here}: tuple form (an array of schemas) is not supported; use one schema"
                    ));
                }
                check_at(value, &here)?;
            }
            "enum" => {
                if value.as_array().is_none_or(|a| a.is_empty()) {
                    return Err(format!("{here}: must be a non-empty array"));
                }
            }
            "const" => {}
            "minimum" | "maximum" => {
                if !value.is_number() {
                    return Err(format!("{here}: must be a number"));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(format!("{here}: must be a non-negative integer"));
                }
            }
            "pattern" => {
                return Err(format!(
                    "{here}: the `pattern` keyword is not supported (regular expressions are not \
                     validated); remove it and check the string in code"
                ))
            }
            k if IGNORED.contains(&k) => {}
            k => {
                return Err(format!(
                    "{here}: unknown or unsupported schema keyword `{k}`"
                ))
            }
        }
    }
    Ok(())
}

fn check_type_keyword(value: &Value, here: &str) -> Result<(), String> {
    let known = |t: &Value| t.as_str().is_some_and(|s| TYPES.contains(&s));
    match value {
        Value::String(_) if known(value) => Ok(()),
        Value::Array(items) if !items.is_empty() && items.iter().all(known) => {
            let mut seen: Vec<&Value> = Vec::new();
            for t in items {
                if seen.contains(&t) {
                    return Err(format!("{here}: duplicate type {t}"));
                }
                seen.push(t);
            }
            Ok(())
        }
        _ => Err(format!(
            "{here}: must be one of {} or a non-empty array of them, got {value}",
            TYPES.join(", ")
        )),
    }
}

/// Validates `value` against `schema` (assumed to have passed [`check_schema`]).
///
/// Returns every violation, each as `<path>: <problem>` with paths like `$.a[2].b`.
pub fn validate(schema: &Value, value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    validate_at(schema, value, "$", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn validate_at(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let obj = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{at}: no value is allowed here"));
            return;
        }
        Value::Object(obj) => obj,
        _ => {
            errors.push(format!("{at}: invalid schema"));
            return;
        }
    };
    if let Some(t) = obj.get("type") {
        if !type_matches(t, value) {
            errors.push(format!(
                "{at}: expected {}, got {}",
                expected_types(t),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(options)) = obj.get("enum") {
        if !options.iter().any(|o| json_eq(o, value)) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            errors.push(format!("{at}: {value} is not one of [{}]", list.join(", ")));
        }
    }
    if let Some(c) = obj.get("const") {
        if !json_eq(c, value) {
            errors.push(format!("{at}: expected the constant {c}, got {value}"));
        }
    }
    match value {
        Value::Number(n) => validate_number(obj, n.as_f64().unwrap_or(f64::NAN), at, errors),
        Value::String(s) => {
            let len = s.chars().count() as u64;
            bound(obj, "minLength", at, errors, |min| {
                (len < min).then(|| format!("string is shorter than minLength {min}"))
            });
            bound(obj, "maxLength", at, errors, |max| {
                (len > max).then(|| format!("string is longer than maxLength {max}"))
            });
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            bound(obj, "minItems", at, errors, |min| {
                (len < min).then(|| format!("array has {len} items, fewer than minItems {min}"))
            });
            bound(obj, "maxItems", at, errors, |max| {
                (len > max).then(|| format!("array has {len} items, more than maxItems {max}"))
            });
            if let Some(item_schema) = obj.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(item_schema, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => validate_object(obj, map, at, errors),
        Value::Bool(_) | Value::Null => {}
    }
}

fn validate_number(obj: &Map<String, Value>, n: f64, at: &str, errors: &mut Vec<String>) {
    if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
        if n < min {
            errors.push(format!("{at}: {n} is less than minimum {min}"));
        }
    }
    if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
        if n > max {
            errors.push(format!("{at}: {n} is greater than maximum {max}"));
        }
    }
}

fn validate_object(
    obj: &Map<String, Value>,
    map: &Map<String, Value>,
    at: &str,
    errors: &mut Vec<String>,
) {
    if let Some(Value::Array(required)) = obj.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                errors.push(format!("{at}: missing required property \"{name}\""));
            }
        }
    }
    let props = obj.get("properties").and_then(Value::as_object);
    for (name, v) in map {
        let here = format!("{at}{}", prop_path(name));
        match props.and_then(|p| p.get(name)) {
            Some(sub) => validate_at(sub, v, &here, errors),
            None => match obj.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected property \"{name}\""))
                }
                Some(extra) => validate_at(extra, v, &here, errors),
                None => {}
            },
        }
    }
}

fn bound(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    errors: &mut Vec<String>,
    check: impl FnOnce(u64) -> Option<String>,
) {
    if let Some(msg) = obj.get(key).and_then(Value::as_u64).and_then(check) {
        errors.push(format!("{at}: {msg}"));
    }
}

fn type_matches(t: &Value, value: &Value) -> bool {
    match t {
        Value::String(name) => is_type(name, value),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .any(|n| is_type(n, value)),
        _ => true,
    }
}

fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => is_integer(value),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn expected_types(t: &Value) -> String {
    match t {
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The JSON type name of `value`; integral numbers are reported as `integer`.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `.name` for identifier-like keys, `["odd key"]` otherwise.
fn prop_path(name: &str) -> String {
    let ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        format!(".{name}")
    } else {
        format!("[{}]", Value::String(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(schema: Value, value: Value) -> Vec<String> {
        check_schema(&schema).expect("schema well-formed");
        validate(&schema, &value).err().unwrap_or_default()
    }

    #[test]
    fn type_keyword() {
        assert!(errs(json!({"type": "string"}), json!("x")).is_empty());
        assert_eq!(
            errs(json!({"type": "integer"}), json!("x")),
            ["$: expected integer, got string"]
        );
        assert!(errs(json!({"type": "integer"}), json!(3)).is_empty());
        assert!(errs(json!({"type": "integer"}), json!(3.0)).is_empty());
        assert_eq!(
            errs(json!({"type": "integer"}), json!(3.5)),
            ["$: expected integer, got number"]
        );
        assert!(errs(json!({"type": "number"}), json!(3)).is_empty());
        assert!(errs(json!({"type": "boolean"}), json!(false)).is_empty());
        assert!(errs(json!({"type": "null"}), json!(null)).is_empty());
        assert!(errs(json!({"type": "array"}), json!([])).is_empty());
        assert!(errs(json!({"type": "object"}), json!({})).is_empty());
        assert_eq!(
            errs(json!({"type": "object"}), json!([])),
            ["$: expected object, got array"]
        );
        let nullable = json!({"type": ["string", "null"]});
        assert!(errs(nullable.clone(), json!(null)).is_empty());
        assert_eq!(
            errs(nullable, json!(1)),
            ["$: expected string or null, got integer"]
        );
    }

    #[test]
    fn properties_and_paths() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"type": "array", "items": {
                    "type": "object", "properties": {"b": {"type": "integer"}}
                }},
                "odd key": {"type": "string"}
            }
        });
        let e = errs(
            schema,
            json!({"a": [{"b": 1}, {"b": 2}, {"b": "x"}], "odd key": 5}),
        );
        assert_eq!(
            e,
            [
                "$.a[2].b: expected integer, got string",
                "$[\"odd key\"]: expected string, got integer"
            ]
        );
    }

    #[test]
    fn required_keyword() {
        let schema = json!({"type": "object", "required": ["path", "n"]});
        assert!(errs(schema.clone(), json!({"path": "a", "n": 1})).is_empty());
        assert_eq!(
            errs(schema, json!({"path": "a"})),
            ["$: missing required property \"n\""]
        );
        assert!(check_schema(&json!({"required": "path"})).is_err());
        assert!(check_schema(&json!({"required": [1]})).is_err());
    }

    #[test]
    fn additional_properties_keyword() {
        let closed = json!({"properties": {"a": {}}, "additionalProperties": false});
        assert!(errs(closed.clone(), json!({"a": 1})).is_empty());
        assert_eq!(
            errs(closed, json!({"a": 1, "b": 2})),
            ["$: unexpected property \"b\""]
        );
        let typed = json!({"additionalProperties": {"type": "number"}});
        assert_eq!(
            errs(typed, json!({"x": 1, "y": "no"})),
            ["$.y: expected number, got string"]
        );
        assert!(errs(json!({"additionalProperties": true}), json!({"z": 1})).is_empty());
        assert!(check_schema(&json!({"additionalProperties": "no"})).is_err());
    }

    #[test]
    fn items_keyword() {
        let schema = json!({"type": "array", "items": {"type": "string"}});
        assert!(errs(schema.clone(), json!(["a", "b"])).is_empty());
        assert_eq!(
            errs(schema, json!(["a", 1, null])),
            [
                "$[1]: expected string, got integer",
                "$[2]: expected string, got null"
            ]
        );
        let err = check_schema(&json!({"items": [{"type": "string"}]})).unwrap_err();
        assert!(err.contains("tuple"), "{err}");
    }

    #[test]
    fn enum_and_const_keywords() {
        let schema = json!({"enum": ["a", "b", 1]});
        assert!(errs(schema.clone(), json!("b")).is_empty());
        assert!(errs(schema.clone(), json!(1.0)).is_empty());
        assert_eq!(
            errs(schema, json!("c")),
            ["$: \"c\" is not one of [\"a\", \"b\", 1]"]
        );
        assert!(check_schema(&json!({"enum": []})).is_err());
        assert!(check_schema(&json!({"enum": "a"})).is_err());
        assert!(errs(json!({"const": {"k": [1]}}), json!({"k": [1]})).is_empty());
        assert_eq!(
            errs(json!({"const": 2}), json!(3)),
            ["$: expected the constant 2, got 3"]
        );
    }

    #[test]
    fn minimum_maximum_keywords() {
        let schema = json!({"type": "number", "minimum": 0, "maximum": 10.5});
        assert!(errs(schema.clone(), json!(0)).is_empty());
        assert!(errs(schema.clone(), json!(10.5)).is_empty());
        assert_eq!(
            errs(schema.clone(), json!(-1)),
            ["$: -1 is less than minimum 0"]
        );
        assert_eq!(
            errs(schema, json!(11)),
            ["$: 11 is greater than maximum 10.5"]
        );
        assert!(check_schema(&json!({"minimum": "0"})).is_err());
    }

    #[test]
    fn length_keywords() {
        let schema = json!({"type": "string", "minLength": 2, "maxLength": 3});
        assert!(errs(schema.clone(), json!("ab")).is_empty());
        assert!(
            errs(schema.clone(), json!("äöü")).is_empty(),
            "counts chars, not bytes"
        );
        assert_eq!(
            errs(schema.clone(), json!("a")),
            ["$: string is shorter than minLength 2"]
        );
        assert_eq!(
            errs(schema, json!("abcd")),
            ["$: string is longer than maxLength 3"]
        );
        assert!(check_schema(&json!({"minLength": -1})).is_err());
        assert!(check_schema(&json!({"maxLength": 1.5})).is_err());
    }

    #[test]
    fn item_count_keywords() {
        let schema = json!({"type": "array", "minItems": 1, "maxItems": 2});
        assert!(errs(schema.clone(), json!([1])).is_empty());
        assert_eq!(
            errs(schema.clone(), json!([])),
            ["$: array has 0 items, fewer than minItems 1"]
        );
        assert_eq!(
            errs(schema, json!([1, 2, 3])),
            ["$: array has 3 items, more than maxItems 2"]
        );
    }

    #[test]
    fn pattern_is_rejected_clearly() {
        let err = check_schema(&json!({
            "type": "object",
            "properties": {"id": {"type": "string", "pattern": "^a"}}
        }))
        .unwrap_err();
        assert!(err.starts_with("$.properties.id.pattern:"), "{err}");
        assert!(err.contains("`pattern` keyword is not supported"), "{err}");
    }

    #[test]
    fn unknown_keywords_and_bad_types_rejected() {
        let err = check_schema(&json!({"type": "string", "format": "uri"})).unwrap_err();
        assert!(err.contains("`format`"), "{err}");
        let err = check_schema(&json!({"type": "str"})).unwrap_err();
        assert!(err.starts_with("$.type:"), "{err}");
        assert!(check_schema(&json!({"type": []})).is_err());
        assert!(check_schema(&json!({"type": ["string", "string"]})).is_err());
        assert!(check_schema(&json!({"properties": []})).is_err());
        assert!(check_schema(&json!("string")).is_err());
        assert!(check_schema(&json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "t", "description": "d", "default": 1
        }))
        .is_ok());
    }

    #[test]
    fn boolean_schemas() {
        assert!(errs(json!(true), json!(1)).is_empty());
        assert_eq!(
            errs(json!(false), json!(1)),
            ["$: no value is allowed here"]
        );
    }

    #[test]
    fn collects_all_errors() {
        let schema = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "required": ["c"]
        });
        assert_eq!(errs(schema, json!({"a": 1, "b": "x"})).len(), 3);
    }
}
